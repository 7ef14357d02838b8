from __future__ import annotations

import time
from decimal import Decimal

import anthropic
import pytest

from ledgerly import llm
from ledgerly.llm.conf import config
from ledgerly.llm.gateway import STATIC_REPLY, parse_structured
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd
from ledgerly.llm.prompt_registry import get as get_prompt
from tests.llm.conftest import LOOKUP_TOOL, ROUTE_SCHEMA, run_ctx, user

pytestmark = pytest.mark.django_db


def outcomes(**filters) -> list[tuple[str, str, bool]]:
    rows = LLMCall.objects.filter(**filters).order_by("id")
    return [(r.model, r.outcome, r.fallback) for r in rows]


def test_a_call_is_recorded_with_model_prompt_tokens_and_cost(gateway):
    completion = llm.complete(
        ctx=run_ctx(ticket_id=17, run_id="run-1", customer_ref=5),
        tier="small",
        purpose="summarise",
        prompt="summarise_conversation",
        messages=user("Customer: I was charged twice for invoice INV-1001 on 3 May, 49 EUR."),
        max_tokens=200,
        fallback="static",
    )

    row = LLMCall.objects.get(pk=completion.call_id)
    prompt = get_prompt("summarise_conversation")
    usage = TokenUsage(
        row.input_tokens,
        row.output_tokens,
        row.cache_creation_input_tokens,
        row.cache_read_input_tokens,
    )
    assert completion.text
    assert (completion.model, completion.tier, completion.simulated) == (
        "claude-haiku-5-5",
        "small",
        True,
    )
    assert (completion.static, completion.fallback) == (False, False)
    assert (row.ticket_id, row.run_id, row.customer_id, row.purpose) == (
        "17",
        "run-1",
        "5",
        "summarise",
    )
    assert (row.prompt_name, row.prompt_version, row.prompt_hash) == (
        prompt.name,
        prompt.version,
        prompt.sha256,
    )
    assert (row.outcome, row.attempts, row.simulated) == ("ok", 1, True)
    assert row.input_tokens > 0
    assert row.output_tokens > 0
    assert row.request_id.startswith("req_sim_")
    assert row.cost_usd == completion.cost_usd == cost_usd(config().price(row.model), usage)
    assert completion.usage == usage.as_dict()


def test_structured_output_is_parsed_and_validated(gateway):
    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("I was charged twice this month, please refund the duplicate charge."),
        max_tokens=200,
        output_schema=ROUTE_SCHEMA,
        fallback="static",
    )

    assert completion.data is not None
    assert completion.data["lane"] in {"faq", "refund", "complex"}
    assert 0 <= completion.data["confidence"] <= 1


def test_a_valid_structured_answer_passes_validation_in_code(gateway):
    data, problem = parse_structured(
        ROUTE_SCHEMA, '{"lane": "refund", "confidence": 0.9, "reason": "x"}', "end_turn"
    )

    assert problem is None
    assert data == {"lane": "refund", "confidence": 0.9, "reason": "x"}


@pytest.mark.parametrize(
    ("text", "stop_reason", "error"),
    [
        ('{"lane": "teleport", "confidence": 0.9, "reason": "x"}', "end_turn", "'teleport' is not"),
        ('{"lane": "faq", "confidence": 0.9}', "end_turn", "'reason' is a required property"),
        ("not json", "end_turn", "not JSON"),
        ('{"lane": "faq", "conf', "max_tokens", "cut off at max_tokens"),
    ],
)
def test_invalid_structured_answers_are_caught_in_code(gateway, text, stop_reason, error):
    data, problem = parse_structured(ROUTE_SCHEMA, text, stop_reason)

    assert data is None
    assert problem is not None
    assert error in problem


def test_tool_input_violating_its_schema_is_flagged(gateway, simulator):
    simulator.inject("malformed_tool_input")
    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("Please check charge ch_123 on my account."),
        max_tokens=300,
        tools=[LOOKUP_TOOL],
        fallback="static",
    )

    assert [c.name for c in completion.tool_calls] == ["lookup_charge"]
    assert completion.tool_calls[0].error is not None


def test_static_prompt_and_tools_carry_cache_control(gateway):
    request = gateway.build_request(
        prompt=get_prompt("faq_answer"),
        messages=user("hi"),
        max_tokens=10,
        tools=[LOOKUP_TOOL, {**LOOKUP_TOOL, "name": "other"}],
        output_schema=None,
        system_extra="<documents></documents>",
    )

    assert [b.get("cache_control") for b in request["system"]] == [{"type": "ephemeral"}, None]
    assert [t.get("cache_control") for t in request["tools"]] == [None, {"type": "ephemeral"}]
    assert not {"temperature", "top_p", "top_k", "tool_choice", "thinking"} & set(request)
    assert "cache_control" not in LOOKUP_TOOL  # the caller's tools are not modified


def test_sdk_retries_an_overloaded_529_and_the_call_succeeds(gateway):
    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("What payment methods do you accept?"),
        max_tokens=100,
        extra_headers={
            "x-sim-fault": "overloaded",
            "x-sim-fault-times": "1",
            "x-sim-fault-key": "retry-529",
            "x-sim-retry-after": "0.01",
        },
        fallback="static",
    )

    row = LLMCall.objects.get(pk=completion.call_id)
    assert (row.outcome, row.attempts) == ("ok", 2)


def test_sdk_gives_up_on_a_persistent_529_with_overloaded_error(simulator, settings):
    from ledgerly.llm.client import build_client

    settings.LLM_MAX_RETRIES = 2
    client, _ = build_client(config(), inner=simulator)

    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(
            model="claude-haiku-5-5",
            max_tokens=50,
            messages=user("hello"),
            extra_headers={"x-sim-fault": "overloaded", "x-sim-retry-after": "0.01"},
        )

    assert caught.value.status_code == 529
    assert caught.value.response.request.headers["x-stainless-retry-count"] == "2"  # 3 attempts


def test_a_retry_after_beyond_the_cap_becomes_defer_without_waiting(gateway):
    started = time.monotonic()
    with pytest.raises(llm.Defer) as caught:
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("hello"),
            max_tokens=50,
            extra_headers={"x-sim-fault": "rate_limited", "x-sim-retry-after": "90"},
            fallback="static",
        )

    assert caught.value.seconds == 90
    assert time.monotonic() - started < 1.5
    row = LLMCall.objects.get()
    assert (row.outcome, row.attempts) == ("deferred", 1)


def test_a_retry_after_under_the_cap_is_waited_out_by_the_sdk(gateway):
    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("hello"),
        max_tokens=50,
        extra_headers={
            "x-sim-fault": "rate_limited",
            "x-sim-fault-times": "1",
            "x-sim-fault-key": "short-429",
            "x-sim-retry-after": "0.2",
        },
        fallback="static",
    )

    assert LLMCall.objects.get(pk=completion.call_id).attempts == 2


@pytest.mark.parametrize(
    ("fault", "error", "outcome"),
    [
        ("bad_request", llm.ModelCallFailed, "bad_request"),
        ("spend_limit", llm.BudgetExhausted, "budget_exhausted"),
    ],
)
def test_permanent_errors_are_not_retried(gateway, fault, error, outcome):
    with pytest.raises(error):
        llm.complete(
            ctx=run_ctx(),
            tier="large",
            purpose="agent_step",
            prompt="faq_answer",
            messages=user("hello"),
            max_tokens=50,
            extra_headers={"x-sim-fault": fault},
            fallback="static",
        )

    row = LLMCall.objects.get()  # no fallback either: the request itself is the problem
    assert (row.outcome, row.attempts, row.model) == (outcome, 1, "claude-sonnet-5-5")


def test_large_falls_back_to_small_and_both_steps_are_recorded(gateway, simulator):
    simulator.inject("overloaded", times=2)  # both attempts on the large model

    completion = llm.complete(
        ctx=run_ctx(ticket_id=3),
        tier="large",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("How do refunds work?"),
        max_tokens=100,
        fallback="static",
    )

    assert (completion.tier, completion.model, completion.fallback) == (
        "small",
        "claude-haiku-5-5",
        True,
    )
    assert outcomes(ticket_id="3") == [
        ("claude-sonnet-5-5", "failed", False),
        ("claude-haiku-5-5", "ok", True),
    ]
    assert list(LLMCall.objects.order_by("id").values_list("attempts", flat=True)) == [2, 1]


def test_when_every_model_fails_the_static_answer_escalates(gateway, simulator):
    simulator.inject("server_error", times=4)

    completion = llm.complete(
        ctx=run_ctx(ticket_id=4),
        tier="large",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("How do refunds work?"),
        max_tokens=100,
        fallback="static",
    )

    assert (completion.static, completion.fallback, completion.text) == (True, True, STATIC_REPLY)
    assert completion.cost_usd == Decimal(0)
    assert outcomes(ticket_id="4") == [
        ("claude-sonnet-5-5", "failed", False),
        ("claude-haiku-5-5", "failed", True),
        ("", "static", True),
    ]


def test_an_open_breaker_skips_its_model_without_calling_it(gateway, simulator):
    for _ in range(3):
        gateway.breaker.record_failure("claude-sonnet-5-5", probe=False)

    completion = llm.complete(
        ctx=run_ctx(ticket_id=5),
        tier="large",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("How do refunds work?"),
        max_tokens=100,
        fallback="static",
    )

    assert completion.tier == "small"
    assert outcomes(ticket_id="5") == [
        ("claude-sonnet-5-5", "circuit_open", False),
        ("claude-haiku-5-5", "ok", True),
    ]
    assert LLMCall.objects.get(outcome="circuit_open").attempts == 0


def test_repeated_failures_through_the_gateway_open_the_breaker(gateway, simulator):
    simulator.inject("server_error", times=6)  # 3 small-tier calls x 2 attempts
    for _ in range(3):
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )

    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("x"),
        max_tokens=20,
        fallback="static",
    )

    assert gateway.breaker.state("claude-haiku-5-5") == "open"
    assert completion.static
    assert list(LLMCall.objects.order_by("id").values_list("outcome", flat=True))[-2:] == [
        "circuit_open",
        "static",
    ]


def test_a_deadline_already_passed_means_no_call(gateway):
    completion = llm.complete(
        ctx=run_ctx(seconds=-1),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("x"),
        max_tokens=20,
        fallback="static",
    )

    assert completion.static
    assert outcomes() == [("claude-haiku-5-5", "deadline", False), ("", "static", True)]


def test_run_budget_refusal_raises_budget_exhausted_and_is_recorded(make_gateway, settings):
    settings.LLM_RUN_BUDGET_USD = Decimal("0.000001")
    make_gateway()

    with pytest.raises(llm.BudgetExhausted) as caught:
        llm.complete(
            ctx=run_ctx(run_id="tiny"),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )

    assert caught.value.scope == "run_usd"
    assert outcomes(run_id="tiny") == [("claude-haiku-5-5", "budget_exhausted", False)]


def test_provider_headers_reporting_no_room_stop_calls_before_a_429(settings, redis_client):
    from ledgerly.llm import gateway as gateway_module
    from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

    settings.LLM_RETRY_AFTER_CAP_SECONDS = 2.0
    tight = SimulatorTransport(SimulatorConfig(requests_per_minute=5))  # the provider: 5 RPM
    gateway_module.install(gateway_module.Gateway(inner_transport=tight))

    answered = [
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        ).static
        for _ in range(5)
    ]
    with pytest.raises(llm.Defer) as caught:
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )

    assert answered == [False] * 5
    assert caught.value.seconds > 2
    # Deferred by our own limiter: the provider never saw the sixth request, so no 429.
    assert LLMCall.objects.order_by("-id").values_list("outcome", "attempts")[0] == ("deferred", 0)
    gateway_module.install(None)


@pytest.mark.parametrize(
    ("used_fraction", "served_tier", "threshold_level"),
    [(0.5, "large", None), (0.85, "large", "warn"), (0.96, "small", "downgrade")],
)
def test_global_spend_thresholds_warn_and_then_serve_large_calls_small(
    gateway, settings, used_fraction, served_tier, threshold_level
):
    from ledgerly.llm import metrics
    from ledgerly.llm.budget import Candidate

    daily = int(settings.LLM_DAILY_BUDGET_USD * 1_000_000)
    gateway.budgets.reserve([Candidate(int(daily * used_fraction), 0, large=False)])
    before = {
        level: metrics.BUDGET_THRESHOLD.labels(level)._value.get()
        for level in ("warn", "downgrade")
    }

    completion = llm.complete(
        ctx=run_ctx(),
        tier="large",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("hi"),
        max_tokens=50,
        fallback="static",
    )

    after = {
        level: metrics.BUDGET_THRESHOLD.labels(level)._value.get()
        for level in ("warn", "downgrade")
    }
    raised = {level for level in after if after[level] > before[level]}
    assert completion.tier == served_tier
    assert completion.fallback == (served_tier != "large")
    assert raised == ({threshold_level} - {None})
    assert metrics.BUDGET_USED._value.get() >= used_fraction


def test_at_100_percent_of_the_global_budget_model_calls_stop(gateway, settings):
    from ledgerly.llm.budget import Candidate

    daily = int(settings.LLM_DAILY_BUDGET_USD * 1_000_000)
    gateway.budgets.reserve([Candidate(daily, 0, large=False)])

    with pytest.raises(llm.BudgetExhausted):
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )


def test_spend_for_a_run_sums_every_recorded_step(gateway, simulator):
    from ledgerly.llm.selectors import llm_spend_for_run

    simulator.inject("overloaded", times=2)
    completion = llm.complete(
        ctx=run_ctx(run_id=9),
        tier="large",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("hi"),
        max_tokens=50,
        fallback="static",
    )

    spend = llm_spend_for_run(run_id=9)
    assert spend["steps"] == 2
    assert spend["cost"] == completion.cost_usd > 0
    assert spend["output_tokens"] == completion.usage["output_tokens"]


def test_without_redis_calls_are_deferred_not_made_unguarded(make_gateway, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    make_gateway()

    with pytest.raises(llm.Defer):
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )

    assert not LLMCall.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_call_record_written_outside_a_transaction_leaves_the_session_settings_alone(gateway):
    from django.db import connection

    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("x"),
        max_tokens=20,
        fallback="static",
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        setting = cursor.fetchone()[0]

    row = LLMCall.objects.get(pk=completion.call_id)
    assert setting == "on"
    assert row.created_at is not None
    assert row.cost_usd == completion.cost_usd


def test_adaptive_thinking_blocks_stay_out_of_the_text(gateway):
    completion = llm.complete(
        ctx=run_ctx(),
        tier="large",
        purpose="agent_step",
        prompt="faq_answer",
        messages=user("How long do refunds take to reach my card?"),
        max_tokens=2000,
        thinking=True,
        fallback="static",
    )

    kinds = [block["type"] for block in completion.content]
    thoughts = [block["thinking"] for block in completion.content if block["type"] == "thinking"]
    assert completion.tier == "large"
    assert kinds == ["thinking", "text"]
    assert completion.text == completion.content[1]["text"]
    assert thoughts[0] not in completion.text


def test_a_timed_out_attempt_is_retried_by_the_sdk(gateway):
    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("hello"),
        max_tokens=50,
        extra_headers={
            "x-sim-fault": "timeout",
            "x-sim-fault-times": "1",
            "x-sim-fault-key": "timeout-once",
        },
        fallback="static",
    )

    assert LLMCall.objects.get(pk=completion.call_id).attempts == 2


@pytest.mark.parametrize(
    ("fault", "breaker_failures"),
    [("server_error", 1), ("overloaded", 1), ("rate_limited", 0)],
)
def test_only_outages_count_towards_the_breaker(
    gateway, simulator, redis_client, fault, breaker_failures
):
    simulator.inject(fault, times=2)  # both attempts of the one small-tier step

    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("x"),
        max_tokens=20,
        fallback="static",
    )

    failures_key = gateway.breaker.keys("claude-haiku-5-5")[2]
    assert completion.static
    assert redis_client.zcard(failures_key) == breaker_failures


def test_prompt_estimate_over_counts_text_in_any_script():
    from ledgerly.llm.gateway import estimate_prompt_tokens

    english = {"messages": [{"role": "user", "content": "refund " * 400}]}
    japanese = {"messages": [{"role": "user", "content": "返金" * 400}]}

    assert estimate_prompt_tokens(english) > len("refund " * 400) / 4
    assert estimate_prompt_tokens(japanese) > 800  # at least a token per character
