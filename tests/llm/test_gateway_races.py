"""Races through the whole gateway: many threads and processes against one Redis and Postgres."""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from ledgerly import llm
from ledgerly.llm.conf import config
from ledgerly.llm.gateway import estimate_prompt_tokens
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import worst_case_micro_usd
from ledgerly.llm.prompt_registry import get as get_prompt
from tests.llm import workers
from tests.llm.conftest import run_ctx

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

QUESTION = [{"role": "user", "content": "Where can I find my invoices?"}]
SLOW = {"x-sim-latency-ms": "5000"}  # every call still in flight when the last one reserves


def budget_for_50_calls(gateway) -> Decimal:
    request = gateway.build_request(
        prompt=get_prompt("route_ticket"),
        messages=QUESTION,
        max_tokens=100,
        tools=None,
        output_schema=None,
        system_extra=None,
    )
    worst = worst_case_micro_usd(
        config().price("claude-haiku-5-5"),
        prompt_tokens=estimate_prompt_tokens(request),
        max_tokens=100,
    )
    return Decimal(50 * worst) / 1_000_000


def call(_: int) -> str:
    try:
        completion = llm.complete(
            ctx=run_ctx(run_id="race"),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=QUESTION,
            max_tokens=100,
            extra_headers=SLOW,
            fallback="static",
        )
        return "static" if completion.static else "ok"
    except llm.LLMError as exc:
        return type(exc).__name__
    finally:
        connection.close()


def test_200_concurrent_threads_against_a_budget_for_50_run_50_calls(make_gateway, settings):
    settings.LLM_RUN_BUDGET_USD = budget_for_50_calls(make_gateway())
    make_gateway()

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        results = collections.Counter(pool.map(call, range(200)))

    spent = LLMCall.objects.filter(run_id="race").aggregate(total=Sum("cost_usd"))["total"]
    assert results == {"ok": 50, "BudgetExhausted": 150}
    assert LLMCall.objects.filter(run_id="race", outcome="ok").count() == 50
    assert LLMCall.objects.filter(run_id="race", outcome="budget_exhausted").count() == 150
    assert 0 < spent <= settings.LLM_RUN_BUDGET_USD


def test_200_calls_from_4_processes_against_a_budget_for_50_run_50_calls(make_gateway, settings):
    budget = budget_for_50_calls(make_gateway())
    env = {"LLM_RUN_BUDGET_USD": str(budget)}
    db_name = connection.settings_dict["NAME"]

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pending = pool.starmap_async(workers.gateway_calls, [(db_name, env, 50, SLOW, "race")] * 4)
        results = collections.Counter(r for chunk in pending.get(timeout=120) for r in chunk)

    spent = LLMCall.objects.filter(run_id="race").aggregate(total=Sum("cost_usd"))["total"]
    assert results == {"ok": 50, "BudgetExhausted": 150}
    assert LLMCall.objects.filter(run_id="race", outcome="ok").count() == 50
    assert 0 < spent <= budget


def test_breaker_opened_by_failures_in_another_process_fails_calls_fast_here(make_gateway):
    gateway = make_gateway()
    env = {"LLM_MAX_RETRIES": "0", "LLM_BREAKER_FAILURES": "3"}
    db_name = connection.settings_dict["NAME"]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        other = pool.apply(
            workers.gateway_calls, (db_name, env, 3, {"x-sim-fault": "server_error"}, "other")
        )

    completion = llm.complete(
        ctx=run_ctx(run_id="here"),
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=QUESTION,
        max_tokens=100,
        fallback="static",
    )

    assert other == ["static"] * 3
    assert gateway.breaker.state("claude-haiku-5-5") == "open"
    assert completion.static
    here = LLMCall.objects.filter(run_id="here").order_by("id")
    assert [(r.outcome, r.attempts) for r in here] == [("circuit_open", 0), ("static", 0)]
