"""One object holds what a step acquires (budget reservation, rate permit, breaker probe) and
gives back whatever it still holds when the step ends, however it ends, exactly once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis

from ledgerly.llm.budget import Candidate, Reservation
from ledgerly.llm.lease import StepLease

MODEL = "claude-haiku-5-5"
SCOPES = {"global_day", "global_month", "customer_day", "run_usd", "run_tokens"}


def acquire(gateway, *, probe_token: str = "") -> StepLease:
    """A lease holding a reservation of 5000 micro-dollars and 300 tokens, a permit for 200
    input and 100 output tokens and, if given its owner token, the breaker's probe."""
    limits = gateway.config.limits_for(MODEL)
    lease = StepLease(gateway.guards, model=MODEL, limits=limits)
    reservation = gateway.budgets.reserve(
        [Candidate(5000, 300, large=False)], run_id="lease", customer_id="cus_lease"
    )
    assert isinstance(reservation, Reservation)
    lease.hold_reservation(reservation)
    permit, _ = gateway.limiter.try_acquire("haiku", limits, input_tokens=200, output_tokens=100)
    assert permit is not None
    lease.hold_permit(permit)
    if probe_token:
        lease.hold_probe(probe_token)
    return lease


def spent(gateway) -> dict[str, int]:
    return gateway.budgets.spent(run_id="lease", customer_id="cus_lease")


@pytest.fixture
def open_breaker(gateway, settings, redis_client):
    """The small model's breaker, open and with its cool-down over, and the owner token of the
    probe lease just taken."""
    for _ in range(settings.LLM_BREAKER_FAILURES):
        gateway.breaker.record_failure(MODEL, probe=False)
    state = gateway.breaker.keys(MODEL)[0]
    redis_client.hset(state, "open_until", 1)  # the cool-down ended long ago
    admission = gateway.breaker.admit(MODEL)
    assert admission.verdict.value == "probe"
    return gateway, admission.token


def test_leaving_without_settling_gives_everything_back(open_breaker, redis_client):
    gateway, token = open_breaker
    bucket = gateway.limiter.key("haiku")
    with acquire(gateway, probe_token=token):
        assert spent(gateway)["run_usd"] == 5000
        taken = float(redis_client.hget(bucket, "i"))

    assert spent(gateway) == dict.fromkeys(SCOPES, 0)
    assert float(redis_client.hget(bucket, "i")) >= taken + 200  # the estimate came back
    assert gateway.breaker.admit(MODEL).verdict.value == "probe"  # the next caller probes


def test_an_exception_inside_the_step_still_gives_everything_back(gateway):
    with pytest.raises(KeyError), acquire(gateway):
        raise KeyError("boom")

    assert spent(gateway) == dict.fromkeys(SCOPES, 0)


def test_giving_back_twice_gives_back_once(gateway):
    lease = acquire(gateway)

    lease.release()
    lease.release()
    lease.release_budget()
    with lease:
        pass

    assert spent(gateway) == dict.fromkeys(SCOPES, 0)  # never below zero


def test_a_settled_step_keeps_its_real_cost(gateway):
    with acquire(gateway) as lease:
        lease.settle(micro_usd=1200, tokens=150, input_tokens=100, output_tokens=50)

    assert spent(gateway) == {**dict.fromkeys(SCOPES, 1200), "run_tokens": 150}


def test_a_step_that_may_have_been_charged_keeps_its_worst_case(gateway):
    with acquire(gateway) as lease:
        lease.keep_spent()

    assert spent(gateway) == {**dict.fromkeys(SCOPES, 5000), "run_tokens": 300}


def test_a_probe_that_fails_reopens_the_breaker_and_is_not_handed_on(open_breaker):
    gateway, token = open_breaker
    with acquire(gateway, probe_token=token) as lease:
        assert lease.record_failure() == "reopened"

    assert gateway.breaker.admit(MODEL).verdict.value == "open"


def test_a_probe_that_succeeds_closes_the_breaker(open_breaker):
    gateway, token = open_breaker
    with acquire(gateway, probe_token=token) as lease:
        lease.settle(micro_usd=1, tokens=1, input_tokens=1, output_tokens=1)

    assert gateway.breaker.state(MODEL) == "closed"


def test_redis_lost_while_giving_back_does_not_fail_the_step(gateway, monkeypatch):
    lease = acquire(gateway)

    def lost(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(gateway.guards, "settle", lost)
    with lease:
        pass

    # Counted at its worst case (errs on refusing) and forgotten: nothing is given back later.
    assert (lease.reservation, lease.permit) == (None, None)
    assert spent(gateway)["run_usd"] == 5000


def test_batches_use_only_the_gateways_public_surface():
    source = Path(__file__).resolve().parents[2] / "ledgerly" / "llm" / "batches.py"
    tree = ast.parse(source.read_text())
    private_imports = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    private_attributes = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert (private_imports, private_attributes) == ([], [])
