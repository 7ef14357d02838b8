"""Message Batches as rows a beat sweep polls: submitted once per key, polled once per call."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from ledgerly import llm
from ledgerly.llm.batches import batch_poll, batch_submit
from ledgerly.llm.conf import config
from ledgerly.llm.gateway import Gateway
from ledgerly.llm.models import LLMBatch, LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd
from ledgerly.llm.selectors import batches_due
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from tests.llm.conftest import ROUTE_SCHEMA, run_ctx, user

pytestmark = pytest.mark.django_db

TICKETS = {
    "t1": "I was charged twice for my subscription this month.",
    "t2": "How do I download an invoice as a PDF?",
    "t3": "Can I change my plan from monthly to yearly?",
}


def route_requests() -> list[llm.BatchRequest]:
    return [
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


def one_request(custom_id: str = "x") -> list[llm.BatchRequest]:
    return [
        llm.BatchRequest(
            custom_id=custom_id,
            tier="small",
            prompt="route_ticket",
            messages=user("hi"),
            max_tokens=50,
        )
    ]


def reserved(batch: LLMBatch) -> int:
    """The worst case a batch reserved at submission (micro-dollars)."""
    assert batch.reservation is not None
    return int(batch.reservation["micro_usd"])


@pytest.fixture
def slow_gateway(make_gateway):
    """A gateway whose simulator ends batches only after 30 s (so they are still processing)."""
    make_gateway()  # the test settings
    return Gateway(inner_transport=SimulatorTransport(SimulatorConfig(batch_delay_s=30)))


def test_a_batch_is_answered_recorded_and_priced_at_half(gateway):
    ctx = run_ctx(run_id="eval-1", customer_ref="cus_eval")
    batch = batch_submit(ctx=ctx, key="eval-1", requests=route_requests(), poll_seconds=0.01)

    results = batch_poll(batch=batch)

    assert results is not None
    rows = {r.pk: r for r in LLMCall.objects.filter(purpose="eval_route")}
    assert [r.custom_id for r in results] == ["t1", "t2", "t3"]
    assert {r.outcome for r in results} == {"succeeded"}
    assert all(
        r.data is not None and r.data["lane"] in {"faq", "refund", "complex"} for r in results
    )
    assert len(rows) == 3
    assert {(row.batch_id, row.run_id, row.customer_id) for row in rows.values()} == {
        (batch.provider_batch_id, "eval-1", "cus_eval")
    }
    for result in results:
        row = rows[result.call_id]
        usage = TokenUsage(row.input_tokens, row.output_tokens)
        full = cost_usd(config().price(row.model), usage)
        assert row.cost_usd == result.cost_usd == full / 2
    # Settled to the real cost, against the global budget and the run's and customer's.
    spent = gateway.budgets.spent(run_id="eval-1", customer_id="cus_eval")
    total = sum(int(r.cost_usd * 1_000_000) + 1 for r in results)
    assert 0 < spent["global_day"] <= total
    assert spent["run_usd"] == spent["customer_day"] == spent["global_day"]
    assert spent["run_tokens"] == sum(sum(r.usage.values()) for r in results)
    batch.refresh_from_db()
    assert (batch.state, batch.next_poll_at) == ("ended", None)


def test_a_second_submit_with_the_same_key_never_submits_again(gateway):
    first = batch_submit(ctx=run_ctx(), key="nightly-2026-12-01", requests=route_requests())
    again = batch_submit(ctx=run_ctx(), key="nightly-2026-12-01", requests=route_requests())

    assert again.pk == first.pk
    assert again.provider_batch_id == first.provider_batch_id
    assert len(gateway.client.messages.batches.list().data) == 1
    # Only the first reserved: the second gave nothing to settle.
    assert gateway.budgets.spent()["global_day"] == reserved(LLMBatch.objects.get())


def test_a_batch_that_cannot_fit_the_budget_is_not_submitted(make_gateway, settings):
    settings.LLM_DAILY_BUDGET_USD = Decimal("0.000001")
    gateway = make_gateway()

    with pytest.raises(llm.BudgetExhausted):
        batch_submit(ctx=run_ctx(), key="too-big", requests=one_request())

    assert not LLMCall.objects.exists()
    assert not LLMBatch.objects.exists()  # the key stays free: nothing was submitted
    assert gateway.client.messages.batches.list().data == []


def test_a_batch_still_processing_is_polled_once_and_its_next_poll_moved_on(slow_gateway):
    batch = batch_submit(
        ctx=run_ctx(), key="slow", requests=one_request(), poll_seconds=60, gateway=slow_gateway
    )
    due_at = batch.next_poll_at
    now = timezone.now()
    assert due_at is not None

    assert list(batches_due(now=now)) == []
    assert list(batches_due(now=due_at)) == [batch]
    assert batch_poll(batch=batch, gateway=slow_gateway) is None

    batch.refresh_from_db()
    assert batch.state == "processing"
    assert batch.next_poll_at is not None
    assert batch.next_poll_at >= now + dt.timedelta(seconds=59)
    assert not LLMCall.objects.exists()
    assert slow_gateway.budgets.spent()["global_day"] == reserved(batch)


def test_polling_an_ended_batch_again_records_and_settles_it_once(gateway):
    batch = batch_submit(ctx=run_ctx(run_id="twice"), key="twice", requests=route_requests())
    first = batch_poll(batch=batch)
    spent = gateway.budgets.spent(run_id="twice")

    again = batch_poll(batch=batch)

    assert again == first
    assert LLMCall.objects.count() == 3
    assert gateway.budgets.spent(run_id="twice") == spent
    assert list(batches_due(now=timezone.now() + dt.timedelta(days=1))) == []


def test_a_batch_past_its_deadline_is_cancelled_stays_counted_then_records_what_ran(
    slow_gateway,
):
    batch = batch_submit(
        ctx=run_ctx(seconds=0.0), key="late", requests=one_request("late"), gateway=slow_gateway
    )

    assert batch_poll(batch=batch, gateway=slow_gateway) is None

    [remote] = slow_gateway.client.messages.batches.list().data
    assert remote.cancel_initiated_at is not None
    batch.refresh_from_db()
    assert batch.cancel_requested_at is not None
    # Until the provider says what it processed, the worst case stays counted.
    assert slow_gateway.budgets.spent()["global_day"] == reserved(batch) > 0

    [result] = batch_poll(batch=batch, gateway=slow_gateway) or []

    assert result.outcome == "canceled"
    assert LLMCall.objects.get().outcome == "failed"
    assert slow_gateway.budgets.spent()["global_day"] == 0  # nothing of it was billed


@pytest.mark.parametrize(
    "call",
    [
        lambda batch: batch_submit(ctx=run_ctx(), key="inside", requests=one_request()),
        lambda batch: batch_poll(batch=batch),
    ],
    ids=["submit", "poll"],
)
def test_batches_refuse_to_run_inside_a_transaction(gateway, call):
    batch = batch_submit(ctx=run_ctx(), key="outside", requests=one_request())

    with pytest.raises(llm.CalledInsideTransaction), transaction.atomic():
        call(batch)

    assert list(LLMBatch.objects.values_list("key", flat=True)) == ["outside"]
    assert not LLMCall.objects.exists()
