from __future__ import annotations

import time
from decimal import Decimal

import pytest

from ledgerly import llm
from ledgerly.llm.conf import config
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd
from tests.llm.conftest import ROUTE_SCHEMA, user

pytestmark = pytest.mark.django_db

TICKETS = {
    "t1": "I was charged twice for my subscription this month.",
    "t2": "How do I download an invoice as a PDF?",
    "t3": "Can I change my plan from monthly to yearly?",
}


def test_a_batch_is_answered_recorded_and_priced_at_half(gateway):
    requests = [
        llm.BatchRequest(
            custom_id=cid,
            tier="small",
            prompt="route_ticket",
            messages=user(text),
            max_tokens=100,
            purpose="eval_route",
            output_schema=ROUTE_SCHEMA,
        )
        for cid, text in TICKETS.items()
    ]

    results = llm.run_batch(requests, poll_seconds=0.01)

    rows = {r.pk: r for r in LLMCall.objects.filter(purpose="eval_route")}
    assert [r.custom_id for r in results] == ["t1", "t2", "t3"]
    assert {r.outcome for r in results} == {"succeeded"}
    assert all(
        r.data is not None and r.data["lane"] in {"faq", "refund", "complex"} for r in results
    )
    assert len(rows) == 3
    assert len({row.batch_id for row in rows.values()}) == 1
    for result in results:
        row = rows[result.call_id]
        usage = TokenUsage(row.input_tokens, row.output_tokens)
        full = cost_usd(config().price(row.model), usage)
        assert row.cost_usd == result.cost_usd == full / 2
    spent = gateway.budgets.spent()["global_day"]
    assert spent <= sum(int(r.cost_usd * 1_000_000) + 1 for r in results)


def test_a_batch_that_cannot_fit_the_budget_is_not_submitted(make_gateway, settings):
    settings.LLM_DAILY_BUDGET_USD = Decimal("0.000001")
    make_gateway()
    request = llm.BatchRequest(
        custom_id="x", tier="small", prompt="route_ticket", messages=user("hi"), max_tokens=100
    )

    with pytest.raises(llm.BudgetExhausted):
        llm.run_batch([request], poll_seconds=0.01)

    assert not LLMCall.objects.exists()


def test_run_batch_polls_until_a_slow_batch_has_ended(gateway):
    from ledgerly.llm.gateway import Gateway
    from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

    slow = Gateway(inner_transport=SimulatorTransport(SimulatorConfig(batch_delay_s=0.3)))
    request = llm.BatchRequest(
        custom_id="slow", tier="small", prompt="route_ticket", messages=user("hi"), max_tokens=50
    )
    started = time.monotonic()

    results = llm.run_batch([request], poll_seconds=0.05, gateway=slow)

    assert time.monotonic() - started >= 0.3
    assert [(r.custom_id, r.outcome) for r in results] == [("slow", "succeeded")]
    assert LLMCall.objects.get().batch_id.startswith("msgbatch_")
