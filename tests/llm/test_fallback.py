"""Fallback per purpose: "none" the requested tier only, "small" large -> small, "static" then the
holding answer. Without "static", an exhausted chain raises ModelUnavailable, so structured and
tool calls never receive text no model wrote."""

from __future__ import annotations

import pytest

from ledgerly import llm
from ledgerly.llm.gateway import STATIC_REPLY
from ledgerly.llm.models import LLMCall
from tests.llm.conftest import LOOKUP_TOOL, ROUTE_SCHEMA, run_ctx, user

pytestmark = pytest.mark.django_db


def call(tier: str, fallback: str, **extra: object) -> llm.Completion:
    return llm.complete(
        ctx=run_ctx(run_id="fb"),
        tier=tier,  # type: ignore[arg-type]
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("How do refunds work?"),
        max_tokens=100,
        fallback=fallback,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def steps() -> list[tuple[str, str]]:
    return list(LLMCall.objects.order_by("id").values_list("model", "outcome"))


@pytest.mark.parametrize(
    ("tier", "fallback", "failures", "recorded"),
    [
        ("large", "none", 2, [("claude-sonnet-5-5", "failed")]),
        ("small", "none", 2, [("claude-haiku-5-5", "failed")]),
        ("small", "small", 2, [("claude-haiku-5-5", "failed")]),
        ("large", "small", 4, [("claude-sonnet-5-5", "failed"), ("claude-haiku-5-5", "failed")]),
    ],
)
def test_a_chain_exhausted_without_static_raises_model_unavailable(
    gateway, simulator, tier, fallback, failures, recorded
):
    simulator.inject("server_error", times=failures)

    with pytest.raises(llm.ModelUnavailable) as caught:
        call(tier, fallback)

    assert steps() == recorded  # no static row, and no step beyond what was allowed
    assert caught.value.outcomes == ["failed"] * len(recorded)
    assert caught.value.call_ids == list(
        LLMCall.objects.order_by("id").values_list("pk", flat=True)
    )
    assert all(model in str(caught.value) for model, _ in recorded)
    assert "500" in str(caught.value)


def test_small_fallback_serves_a_large_call_from_the_small_tier(gateway, simulator):
    simulator.inject("overloaded", times=2)  # both attempts on the large model

    completion = call("large", "small")

    assert (completion.tier, completion.fallback, completion.static) == ("small", True, False)
    assert steps() == [("claude-sonnet-5-5", "failed"), ("claude-haiku-5-5", "ok")]


def test_static_fallback_still_ends_in_the_holding_answer(gateway, simulator):
    simulator.inject("server_error", times=4)

    completion = call("large", "static")

    assert (completion.static, completion.text) == (True, STATIC_REPLY)
    assert [o for _, o in steps()] == ["failed", "failed", "static"]


def test_an_open_breaker_with_no_fallback_is_unavailable_without_a_call(gateway):
    for _ in range(3):
        gateway.breaker.record_failure("claude-sonnet-5-5", probe=False)

    with pytest.raises(llm.ModelUnavailable) as caught:
        call("large", "none")

    assert caught.value.outcomes == ["circuit_open"]


def test_a_structured_call_whose_answers_fail_validation_never_gets_the_static_text(gateway):
    with pytest.raises(llm.ModelUnavailable) as caught:
        llm.complete(
            ctx=run_ctx(),
            tier="large",
            purpose="route",
            prompt="route_ticket",
            messages=user("I was charged twice, please refund the duplicate charge."),
            max_tokens=8,  # every model's JSON is cut off mid-object
            fallback="small",
            output_schema=ROUTE_SCHEMA,
        )

    assert caught.value.outcomes == ["invalid_output", "invalid_output"]


def test_a_tool_call_that_cannot_be_served_raises_instead_of_answering_static(gateway, simulator):
    simulator.inject("server_error", times=2)

    with pytest.raises(llm.ModelUnavailable):
        call("small", "small", tools=[LOOKUP_TOOL])

    assert not LLMCall.objects.filter(outcome="static").exists()


def test_a_large_call_without_fallback_is_refused_rather_than_downgraded(gateway, settings):
    from ledgerly.llm.budget import Candidate

    daily = int(settings.LLM_DAILY_BUDGET_USD * 1_000_000)
    gateway.budgets.reserve([Candidate(int(daily * 0.96), 0, large=False)])

    with pytest.raises(llm.BudgetExhausted) as caught:
        call("large", "none")

    assert caught.value.scope == "global_downgrade"


def test_an_unknown_fallback_is_refused(gateway):
    with pytest.raises(llm.ModelCallFailed, match="fallback"):
        call("small", "maybe")
