"""The gateway under faults found in review: estimates the API beats, Redis lost mid-call, a
response that cannot be read, labels the call record cannot hold."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import socket
import threading
import time
from decimal import Decimal

import httpx2
import pytest
from django.db import connection
from django.db.models import Sum

from ledgerly import llm
from ledgerly.llm import gateway as gateway_module
from ledgerly.llm import redis_state
from ledgerly.llm.conf import config
from ledgerly.llm.gateway import estimate_prompt_tokens
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import worst_case_micro_usd
from ledgerly.llm.prompt_registry import get as get_prompt
from tests.llm.conftest import LOOKUP_TOOL, ROUTE_SCHEMA, run_ctx, user

QUESTION = user("Can you look up my charge?")


def tool_call(_: int) -> str:
    try:
        completion = llm.complete(
            ctx=run_ctx(run_id="tools"),
            tier="small",
            purpose="agent_step",
            prompt="faq_answer",
            messages=QUESTION,
            max_tokens=16,
            tools=[LOOKUP_TOOL],
            extra_headers={"x-sim-latency-ms": "1500"},
            fallback="static",
        )
        return "static" if completion.static else "ok"
    except llm.LLMError as exc:
        return type(exc).__name__
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_tool_calls_never_spend_past_the_run_budget(make_gateway, settings):
    # The API adds its own tool-use system prompt (hundreds of tokens) to any request with
    # tools: a reservation that leaves it out is beaten by the real bill.
    request = make_gateway().build_request(
        prompt=get_prompt("faq_answer"),
        messages=QUESTION,
        max_tokens=16,
        tools=[LOOKUP_TOOL],
        output_schema=None,
        system_extra=None,
    )
    worst = worst_case_micro_usd(
        config().price("claude-haiku-5-5"),
        prompt_tokens=estimate_prompt_tokens(request),
        max_tokens=16,
    )
    settings.LLM_RUN_BUDGET_USD = Decimal(5 * worst) / 1_000_000
    make_gateway()

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = collections.Counter(pool.map(tool_call, range(20)))

    rows = LLMCall.objects.filter(run_id="tools", outcome="ok")
    spent = rows.aggregate(total=Sum("cost_usd"))["total"]
    assert results == {"ok": 5, "BudgetExhausted": 15}
    assert all(r.input_tokens > 346 for r in rows)  # the tool-use system prompt was billed
    assert 0 < spent <= settings.LLM_RUN_BUDGET_USD


@pytest.mark.django_db
def test_a_tool_call_fits_a_run_token_budget_of_its_own_worst_case(make_gateway, settings):
    request = make_gateway().build_request(
        prompt=get_prompt("faq_answer"),
        messages=QUESTION,
        max_tokens=50,
        tools=[LOOKUP_TOOL],
        output_schema=None,
        system_extra=None,
    )
    settings.LLM_RUN_BUDGET_TOKENS = estimate_prompt_tokens(request) + 50
    gateway = make_gateway()

    completion = llm.complete(
        ctx=run_ctx(run_id="tight"),
        tier="small",
        purpose="agent_step",
        prompt="faq_answer",
        messages=QUESTION,
        max_tokens=50,
        tools=[LOOKUP_TOOL],
        fallback="static",
    )

    used = sum(completion.usage.values())
    assert not completion.static
    assert used <= settings.LLM_RUN_BUDGET_TOKENS
    assert gateway.budgets.spent(run_id="tight")["run_tokens"] == used


class RedisDiesDuringTheCall(httpx2.BaseTransport):
    """Answers from the simulator, and Redis becomes unreachable while the model is working."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        pool = redis_state.client().connection_pool
        pool.connection_kwargs["port"] = 1  # nothing listens there
        for conn in [*pool._available_connections, *pool._in_use_connections]:
            conn.port = 1  # type: ignore[attr-defined]
        pool.disconnect()
        return response


@pytest.fixture
def redis_lost_mid_call(make_gateway, simulator):
    make_gateway()  # the test settings
    gateway = gateway_module.Gateway(inner_transport=RedisDiesDuringTheCall(simulator))
    gateway_module.install(gateway)
    yield gateway
    redis_state.reset()


@pytest.mark.django_db
def test_redis_lost_after_the_model_answered_returns_and_records_the_paid_answer(
    redis_lost_mid_call,
):
    # The provider has charged for the answer: a Defer here would make the caller pay again.
    completion = llm.complete(
        ctx=run_ctx(),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("x"),
        max_tokens=20,
        fallback="static",
    )

    row = LLMCall.objects.get(pk=completion.call_id)
    assert not completion.static
    assert completion.text
    assert (row.outcome, row.cost_usd) == ("ok", completion.cost_usd)
    assert row.cost_usd > 0


class UnreadableAnswer(httpx2.BaseTransport):
    """A 200 whose body is not the Messages API's JSON (a broken proxy, a truncated body)."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            headers={"content-type": "application/json", "request-id": "req_broken"},
            content=b'{"id": "msg_1", "content": [',
            request=request,
        )


@pytest.mark.django_db
def test_an_unreadable_answer_is_recorded_counted_and_falls_back(make_gateway, redis_client):
    gateway = gateway_module.Gateway(inner_transport=UnreadableAnswer())
    gateway_module.install(gateway)

    completion = llm.complete(
        ctx=run_ctx(run_id="broken"),
        tier="large",
        purpose="agent_step",
        prompt="route_ticket",
        messages=user("x"),
        max_tokens=20,
        fallback="static",
    )

    rows = LLMCall.objects.filter(run_id="broken").order_by("id")
    assert completion.static
    assert completion.text == gateway_module.STATIC_REPLY
    assert [(r.model, r.outcome) for r in rows] == [
        ("claude-sonnet-5-5", "failed"),
        ("claude-haiku-5-5", "failed"),
        ("", "static"),
    ]
    assert all("unreadable" in r.error for r in rows[:2])
    # The provider may have charged: the worst case stays counted, never given back.
    assert gateway.budgets.spent(run_id="broken")["run_usd"] > 0


@pytest.mark.django_db
def test_a_purpose_the_call_record_cannot_hold_is_refused_before_any_spend(make_gateway):
    gateway = make_gateway()

    with pytest.raises(llm.ModelCallFailed, match="purpose"):
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="p" * 65,
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )

    assert gateway.budgets.spent()["global_day"] == 0
    assert not LLMCall.objects.exists()


@pytest.mark.django_db
def test_a_structured_answer_failing_validation_falls_back_and_never_leaks(gateway):
    completion = llm.complete(
        ctx=run_ctx(run_id="cut"),
        tier="large",
        purpose="route",
        prompt="route_ticket",
        messages=user("I was charged twice this month, please refund the duplicate charge."),
        max_tokens=8,
        output_schema=ROUTE_SCHEMA,
        fallback="static",
    )

    rows = LLMCall.objects.filter(run_id="cut").order_by("id")
    assert completion.static
    assert (completion.text, completion.data) == (gateway_module.STATIC_REPLY, None)
    assert [(r.model, r.outcome, r.stop_reason) for r in rows] == [
        ("claude-sonnet-5-5", "invalid_output", "max_tokens"),
        ("claude-haiku-5-5", "invalid_output", "max_tokens"),
        ("", "static", ""),
    ]
    assert all(r.cost_usd > 0 for r in rows[:2])


SCREENSHOT = [
    {
        "role": "user",
        "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/invoice.png"}},
            {"type": "text", "text": "Why is this invoice higher than last month?"},
        ],
    }
]


@pytest.mark.django_db
def test_an_image_sent_by_reference_fits_a_run_token_budget_of_its_worst_case(
    make_gateway, settings
):
    # An image costs its pixels, not the length of its URL.
    request = make_gateway().build_request(
        prompt=get_prompt("faq_answer"),
        messages=SCREENSHOT,
        max_tokens=50,
        tools=None,
        output_schema=None,
        system_extra=None,
    )
    settings.LLM_RUN_BUDGET_TOKENS = estimate_prompt_tokens(request) + 50
    gateway = make_gateway()

    completion = llm.complete(
        ctx=run_ctx(run_id="image"),
        tier="small",
        purpose="faq_answer",
        prompt="faq_answer",
        messages=SCREENSHOT,
        max_tokens=50,
        fallback="static",
    )

    used = sum(completion.usage.values())
    assert not completion.static
    assert used <= settings.LLM_RUN_BUDGET_TOKENS
    assert gateway.budgets.spent(run_id="image")["run_tokens"] == used


class SlowProvider(httpx2.BaseTransport):
    """A provider that is healthy but slow: every attempt outlasts the read timeout it was given
    and ends as a network read timeout would."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        time.sleep(request.extensions["timeout"]["read"])
        raise httpx2.ReadTimeout("timed out", request=request)


@pytest.mark.django_db
def test_calls_cut_short_by_their_own_deadline_do_not_open_the_breaker(make_gateway, settings):
    settings.LLM_MAX_RETRIES = 0  # the one attempt is the one the deadline cuts
    make_gateway()
    gateway = gateway_module.Gateway(inner_transport=SlowProvider())
    gateway_module.install(gateway)

    completions = [
        llm.complete(
            ctx=run_ctx(run_id="late", seconds=0.2),
            tier="small",
            purpose="agent_step",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )
        for _ in range(settings.LLM_BREAKER_FAILURES)
    ]

    rows = LLMCall.objects.filter(run_id="late", model="claude-haiku-5-5")
    assert all(c.static for c in completions)
    assert {r.outcome for r in rows} == {"deadline"}
    assert gateway.breaker.state("claude-haiku-5-5") == "closed"


@pytest.mark.parametrize("fault", ["server_error", "overloaded", "timeout", "bad_request"])
@pytest.mark.django_db
def test_a_failed_call_gives_its_reservation_back(gateway, simulator, fault):
    simulator.inject(fault, times=2)  # both attempts of the one step

    with contextlib.suppress(llm.ModelCallFailed):
        llm.complete(
            ctx=run_ctx(run_id="failed", customer_ref="c1"),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=200,
            fallback="static",
        )

    assert gateway.budgets.spent(run_id="failed", customer_id="c1") == {
        "global_day": 0,
        "global_month": 0,
        "customer_day": 0,
        "run_usd": 0,
        "run_tokens": 0,
    }


@pytest.mark.django_db
def test_a_probe_told_to_wait_hands_the_probe_to_the_next_caller(make_gateway, settings):
    settings.LLM_BREAKER_COOLDOWN_SECONDS = 1
    gateway = make_gateway()
    for _ in range(settings.LLM_BREAKER_FAILURES):
        gateway.breaker.record_failure("claude-haiku-5-5", probe=False)
    time.sleep(1.1)

    with pytest.raises(llm.Defer):
        llm.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            extra_headers={"x-sim-fault": "rate_limited", "x-sim-retry-after": "60"},
            fallback="static",
        )

    # Being told to come back in a minute says nothing about the model: the next caller probes.
    assert gateway.breaker.admit("claude-haiku-5-5").verdict.value == "probe"


@pytest.fixture
def redis_that_never_answers():
    """A Redis address that accepts connections and then says nothing (a hung server, a
    half-open connection through a broken network path)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_hangs_defers_the_call_instead_of_hanging_the_worker(
    make_gateway, settings, redis_that_never_answers
):
    settings.REDIS_URL = redis_that_never_answers
    make_gateway()
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            llm.complete(
                ctx=run_ctx(),
                tier="small",
                purpose="route",
                prompt="route_ticket",
                messages=user("x"),
                max_tokens=20,
                fallback="static",
            )
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert time.monotonic() - started < 10
    assert [type(exc) for exc in outcome] == [llm.Defer]
