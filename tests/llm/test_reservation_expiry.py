"""A worker killed between reserve and settle does not hold its worst case forever: every
reservation is open with an expiry until settled or kept, and beat's sweep gives back the ones
past it (ledgerly.llm.budget, ledgerly.llm.tasks.sweep_reservations)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
from django.conf import settings
from django.db import connection

from ledgerly.llm import tasks
from ledgerly.llm.budget import Budgets, Candidate, Refusal, Reservation
from tests.llm import workers
from tests.llm.test_budget import make_limits

HOLD = 60.0


def budgets_with_room(client, micro_usd: int = 1_000) -> Budgets:
    return Budgets(client, make_limits(run_micro_usd=micro_usd), hold_seconds=HOLD)


def reserve(budgets: Budgets, micro_usd: int, run_id: str = "r") -> Reservation | Refusal:
    return budgets.reserve([Candidate(micro_usd, 10, large=False)], run_id=run_id)


def test_a_reservation_never_settled_is_given_back_once_past_its_hold(redis_client):
    budgets = budgets_with_room(redis_client)
    assert isinstance(reserve(budgets, 900), Reservation)  # its worker dies: never settled
    assert isinstance(reserve(budgets, 900), Refusal)

    early = budgets.sweep(now=time.time() + HOLD - 5)
    still_refused = reserve(budgets, 900)
    late = budgets.sweep(now=time.time() + HOLD + 1)
    again = budgets.sweep(now=time.time() + HOLD + 1)

    assert (early.released, late.released, late.micro_usd, again.released) == (0, 1, 900, 0)
    assert isinstance(still_refused, Refusal)
    assert budgets.spent(run_id="r") == dict.fromkeys(
        ["global_day", "global_month", "run_usd", "run_tokens"], 0
    )  # given back once, never below zero
    assert isinstance(reserve(budgets, 900), Reservation)  # the room is back


@pytest.mark.slow
def test_a_worker_killed_between_reserve_and_settle_frees_its_room_after_the_sweep(redis_client):
    limits = make_limits(run_micro_usd=1_000)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=workers.reserve_and_hang, args=(settings.REDIS_URL, limits, 900, HOLD)
    )
    child.start()
    reported = redis_client.blpop(["reserve_and_hang:reserved"], timeout=60)
    assert reported is not None
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    budgets = Budgets(redis_client, limits, prefix="ledgerly:test", hold_seconds=HOLD)
    blocked = budgets.reserve([Candidate(900, 10, large=False)], run_id="killed")

    swept = budgets.sweep(now=time.time() + HOLD + 1)

    assert child.exitcode == -signal.SIGKILL
    assert isinstance(blocked, Refusal)
    assert swept.released == 1
    assert budgets.spent(run_id="killed")["run_usd"] == 0
    assert isinstance(
        budgets.reserve([Candidate(900, 10, large=False)], run_id="killed"), Reservation
    )


def test_settled_and_kept_reservations_are_never_swept(redis_client):
    budgets = budgets_with_room(redis_client, micro_usd=10_000)
    settled, kept = reserve(budgets, 900), reserve(budgets, 700)
    assert isinstance(settled, Reservation)
    assert isinstance(kept, Reservation)
    budgets.settle(settled, micro_usd=120, tokens=5)
    budgets.keep(kept)  # the provider may have charged: the worst case stays

    swept = budgets.sweep(now=time.time() + 10 * HOLD)

    assert swept.released == 0
    assert budgets.open_reservations() == 0
    assert budgets.spent(run_id="r")["run_usd"] == 120 + 700


def test_a_settle_arriving_after_the_sweep_counts_the_real_cost_once(redis_client):
    budgets = budgets_with_room(redis_client)
    reservation = reserve(budgets, 900)
    assert isinstance(reservation, Reservation)
    budgets.sweep(now=time.time() + HOLD + 1)

    budgets.settle(reservation, micro_usd=130, tokens=4)

    assert budgets.spent(run_id="r")["run_usd"] == 130
    assert budgets.spent(run_id="r")["run_tokens"] == 4


def test_the_gateways_combined_admission_also_opens_reservations_that_expire(gateway):
    admitted = gateway.guards.admit(
        model="claude-haiku-5-5",
        family="haiku",
        limits=gateway.config.limits_for("claude-haiku-5-5"),
        candidates=[Candidate(5_000, 300, large=False)],
        run_id="fast",
        customer_id="cus_fast",
        input_tokens=200,
        output_tokens=100,
    )
    assert isinstance(admitted.budget, Reservation)
    assert admitted.budget.rid
    assert gateway.budgets.open_reservations() == 1

    hold = gateway.budgets.hold_seconds
    swept = gateway.budgets.sweep(now=time.time() + hold + 1)

    assert swept.released == 1
    assert gateway.budgets.spent(run_id="fast", customer_id="cus_fast")["run_usd"] == 0


@pytest.mark.django_db
def test_a_completed_gateway_call_leaves_no_open_reservation(gateway):
    from ledgerly import llm
    from tests.llm.conftest import run_ctx, user

    llm.complete(
        ctx=run_ctx(run_id="done"),
        tier="small",
        purpose="summarise",
        prompt="summarise_conversation",
        messages=user("Customer: where is my invoice?"),
        max_tokens=100,
        fallback="none",
    )

    assert gateway.budgets.open_reservations() == 0


def test_beats_sweep_task_gives_back_expired_reservations(make_gateway, settings, redis_client):
    settings.LLM_RESERVATION_HOLD_SECONDS = 0.2
    gateway = make_gateway()
    reservation = gateway.budgets.reserve([Candidate(900, 10, large=False)], run_id="beat")
    assert isinstance(reservation, Reservation)
    time.sleep(0.3)

    released = tasks.sweep_reservations.apply().get()

    assert released == 1
    assert gateway.budgets.spent(run_id="beat")["run_usd"] == 0
    schedule = settings.CELERY_BEAT_SCHEDULE["llm-sweep-reservations"]
    assert schedule["task"] == tasks.sweep_reservations.name


def test_a_batch_reservation_is_held_for_the_whole_batch():
    from ledgerly.llm import batches

    assert batches.BATCH_HOLD_SECONDS > 24 * 3600


@pytest.mark.parametrize("hold", [1.0, 200.0])
def test_a_hold_shorter_than_the_longest_call_stops_startup(hold):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
            "LLM_RESERVATION_HOLD_SECONDS": str(hold),
            "LLM_CALL_TIMEOUT_SECONDS": "60",
            "LLM_MAX_RETRIES": "3",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    assert "LLM_RESERVATION_HOLD_SECONDS" in result.stderr


@pytest.mark.slow
@pytest.mark.django_db
def test_a_worker_killed_inside_a_gateway_call_is_swept_back(gateway):
    """The real path: a process reserves through the gateway's combined admission, is killed
    (kill -9) while the model is still answering, and the sweep gives its worst case back."""
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=workers.gateway_calls,
        args=(
            connection.settings_dict["NAME"],
            {},
            1,
            {"x-sim-latency-ms": "60000"},
            "killed-call",
        ),
    )
    child.start()
    deadline = time.monotonic() + 90
    while gateway.budgets.open_reservations() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = gateway.budgets.spent(run_id="killed-call", customer_id="cus_race")
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)

    early = gateway.budgets.sweep()
    swept = gateway.budgets.sweep(now=time.time() + gateway.budgets.hold_seconds + 1)

    assert child.exitcode == -signal.SIGKILL
    assert held["run_usd"] > 0
    assert (early.released, swept.released) == (0, 1)
    assert swept.micro_usd == held["run_usd"]
    assert gateway.budgets.spent(run_id="killed-call", customer_id="cus_race") == dict.fromkeys(
        held, 0
    )
