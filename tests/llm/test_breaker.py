from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
from django.conf import settings

from ledgerly.llm.breaker import CircuitBreaker, Verdict
from tests.llm import workers

MODEL = "claude-haiku-5-5"


def make_breaker(client, **overrides) -> CircuitBreaker:
    options: dict[str, Any] = {
        "failures": 3,
        "window_seconds": 60,
        "cooldown_seconds": 30,
        "probe_lease_seconds": 5,
    }
    options.update(overrides)
    return CircuitBreaker(client, **options)


def test_failures_below_the_threshold_keep_the_breaker_closed(redis_client):
    breaker = make_breaker(redis_client)
    results = [breaker.record_failure(MODEL, probe=False) for _ in range(2)]

    assert results == ["counted", "counted"]
    assert breaker.admit(MODEL).verdict is Verdict.CLOSED


def test_n_failures_in_the_window_open_it_and_calls_fail_fast(redis_client):
    breaker = make_breaker(redis_client)
    results = [breaker.record_failure(MODEL, probe=False) for _ in range(3)]
    admission = breaker.admit(MODEL)

    assert results[-1] == "opened"
    assert admission.verdict is Verdict.OPEN
    assert 29 < admission.retry_in <= 30
    assert breaker.admit("claude-sonnet-5-5").verdict is Verdict.CLOSED  # per model


def test_failures_older_than_the_window_do_not_count(redis_client):
    breaker = make_breaker(redis_client, window_seconds=0.3)
    breaker.record_failure(MODEL, probe=False)
    breaker.record_failure(MODEL, probe=False)
    time.sleep(0.4)

    result = breaker.record_failure(MODEL, probe=False)

    assert result == "counted"
    assert breaker.admit(MODEL).verdict is Verdict.CLOSED


def test_failures_that_slid_out_of_the_window_stop_counting(redis_client):
    # Each failure keeps the window alive; only the ones still inside it may count.
    breaker = make_breaker(redis_client, window_seconds=0.5)
    results = []
    for _ in range(3):
        results.append(breaker.record_failure(MODEL, probe=False))
        time.sleep(0.3)

    assert results == ["counted", "counted", "counted"]
    assert breaker.admit(MODEL).verdict is Verdict.CLOSED


def test_after_the_cooldown_exactly_one_probe_is_let_through(redis_client):
    breaker = make_breaker(redis_client, failures=1, cooldown_seconds=0.2)
    breaker.record_failure(MODEL, probe=False)
    time.sleep(0.3)

    verdicts = [breaker.admit(MODEL).verdict for _ in range(5)]

    assert verdicts == [Verdict.PROBE] + [Verdict.OPEN] * 4


@pytest.mark.parametrize(
    ("probe_succeeds", "verdict_after"),
    [(True, Verdict.CLOSED), (False, Verdict.OPEN)],
)
def test_the_probe_decides(redis_client, probe_succeeds, verdict_after):
    breaker = make_breaker(redis_client, failures=1, cooldown_seconds=0.2)
    breaker.record_failure(MODEL, probe=False)
    time.sleep(0.3)
    admission = breaker.admit(MODEL)
    assert admission.verdict is Verdict.PROBE

    outcome = {True: breaker.record_success, False: breaker.record_failure}[probe_succeeds]
    outcome(MODEL, probe=True, token=admission.token)

    assert breaker.admit(MODEL).verdict is verdict_after


def test_a_probe_that_never_reports_back_frees_the_lease(redis_client):
    breaker = make_breaker(redis_client, failures=1, cooldown_seconds=0.1, probe_lease_seconds=0.2)
    breaker.record_failure(MODEL, probe=False)
    time.sleep(0.15)
    assert breaker.admit(MODEL).verdict is Verdict.PROBE
    time.sleep(0.25)

    assert breaker.admit(MODEL).verdict is Verdict.PROBE


@pytest.mark.slow
def test_breaker_opened_in_one_process_fails_fast_in_another(redis_client):
    breaker = make_breaker(redis_client)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        result = pool.apply(workers.fail_model_calls, (settings.REDIS_URL, MODEL, 3))

    assert result == "opened"
    assert breaker.admit(MODEL).verdict is Verdict.OPEN


def open_with_cooldown_over(client, **overrides) -> CircuitBreaker:
    breaker = make_breaker(client, failures=1, cooldown_seconds=0.1, **overrides)
    breaker.record_failure(MODEL, probe=False)
    time.sleep(0.15)
    return breaker


@pytest.mark.slow
def test_another_process_cannot_release_the_probe_lease(redis_client):
    breaker = open_with_cooldown_over(redis_client, probe_lease_seconds=30)
    holder = breaker.admit(MODEL)
    assert holder.verdict is Verdict.PROBE
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        verdict, released = pool.apply(
            workers.release_probe_from_elsewhere, (settings.REDIS_URL, MODEL)
        )

    assert (verdict, released) == ("open", False)
    assert breaker.admit(MODEL).verdict is Verdict.OPEN  # the lease is still the holder's
    assert breaker.release_probe(MODEL, holder.token) is True
    assert breaker.admit(MODEL).verdict is Verdict.PROBE  # given back by its holder


def test_a_probe_whose_lease_expired_cannot_settle_the_next_holders_probe(redis_client):
    breaker = open_with_cooldown_over(redis_client, probe_lease_seconds=0.2)
    stale = breaker.admit(MODEL)
    time.sleep(0.25)  # the stale probe's call outlives its lease
    current = breaker.admit(MODEL)
    assert (stale.verdict, current.verdict) == (Verdict.PROBE, Verdict.PROBE)
    assert stale.token != current.token

    results = [
        breaker.record_success(MODEL, probe=True, token=stale.token),
        breaker.record_failure(MODEL, probe=True, token=stale.token),
        breaker.release_probe(MODEL, stale.token),
    ]

    assert results == ["not_holder", "open", False]
    assert breaker.admit(MODEL).verdict is Verdict.OPEN  # the current probe still holds it
    assert breaker.record_success(MODEL, probe=True, token=current.token) == "closed"
    assert breaker.admit(MODEL).verdict is Verdict.CLOSED


def test_the_gateways_combined_admission_hands_out_the_probe_token(gateway, redis_client):
    for _ in range(3):
        gateway.breaker.record_failure(MODEL, probe=False)
    redis_client.hset(gateway.breaker.keys(MODEL)[0], "open_until", 1)  # cool-down over
    from ledgerly.llm.budget import Candidate

    admitted = gateway.guards.admit(
        model=MODEL,
        family="haiku",
        limits=gateway.config.limits_for(MODEL),
        candidates=[Candidate(1, 1, large=False)],
        run_id="probe",
        customer_id=None,
        input_tokens=1,
        output_tokens=1,
    )

    assert admitted.breaker is not None
    assert admitted.breaker.verdict is Verdict.PROBE
    assert redis_client.get(gateway.breaker.keys(MODEL)[1]).decode() == admitted.breaker.token
