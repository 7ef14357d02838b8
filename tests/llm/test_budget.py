from __future__ import annotations

import concurrent.futures
import datetime as dt
import multiprocessing
import time

import pytest
from django.conf import settings

from ledgerly.llm.budget import Budgets, Candidate, Limits, Refusal, Reservation
from tests.llm import workers

BIG = 10**12


def make_limits(**overrides: int | float) -> Limits:
    values: dict = {
        "run_tokens": BIG,
        "run_micro_usd": BIG,
        "customer_daily_micro_usd": BIG,
        "daily_micro_usd": BIG,
        "monthly_micro_usd": BIG,
        "downgrade_fraction": 0.95,
    }
    values.update(overrides)
    return Limits(**values)


@pytest.mark.parametrize(
    ("limit_name", "scope"),
    [
        ("run_micro_usd", "run_usd"),
        ("customer_daily_micro_usd", "customer_day"),
        ("daily_micro_usd", "global_day"),
        ("monthly_micro_usd", "global_month"),
    ],
)
def test_reservation_refused_names_the_budget_without_room(redis_client, limit_name, scope):
    budgets = Budgets(redis_client, make_limits(**{limit_name: 1_000}))
    first = budgets.reserve([Candidate(600, 1, large=False)], run_id=1, customer_id=7)
    second = budgets.reserve([Candidate(600, 1, large=False)], run_id=1, customer_id=7)

    assert isinstance(first, Reservation)
    assert isinstance(second, Refusal)
    assert second.scope == scope
    assert budgets.spent(run_id=1, customer_id=7)[scope] == 600


def test_run_token_budget_refuses_a_call_that_could_exceed_it(redis_client):
    budgets = Budgets(redis_client, make_limits(run_tokens=1_000))
    budgets.reserve([Candidate(1, 900, large=False)], run_id="r")

    refusal = budgets.reserve([Candidate(1, 200, large=False)], run_id="r")

    assert isinstance(refusal, Refusal)
    assert refusal.scope == "run_tokens"


def test_settling_replaces_the_worst_case_by_the_real_cost(redis_client):
    budgets = Budgets(redis_client, make_limits(run_micro_usd=1_000))
    reservation = budgets.reserve([Candidate(900, 500, large=False)], run_id="r")
    assert isinstance(reservation, Reservation)

    budgets.settle(reservation, micro_usd=120, tokens=80)

    assert budgets.spent(run_id="r") == {
        "global_day": 120,
        "global_month": 120,
        "run_usd": 120,
        "run_tokens": 80,
    }
    assert isinstance(budgets.reserve([Candidate(880, 1, large=False)], run_id="r"), Reservation)


def test_large_is_downgraded_to_the_next_candidate_that_fits(redis_client):
    budgets = Budgets(redis_client, make_limits(run_micro_usd=1_000))
    outcome = budgets.reserve(
        [Candidate(5_000, 10, large=True), Candidate(400, 10, large=False)], run_id="r"
    )

    assert isinstance(outcome, Reservation)
    assert (outcome.index, outcome.micro_usd) == (1, 400)


def test_large_calls_are_served_small_past_the_downgrade_fraction(redis_client):
    budgets = Budgets(redis_client, make_limits(daily_micro_usd=10_000, downgrade_fraction=0.95))
    filler = budgets.reserve([Candidate(9_500, 1, large=False)])
    outcome = budgets.reserve([Candidate(10, 1, large=True), Candidate(5, 1, large=False)])

    assert isinstance(filler, Reservation)
    assert filler.global_fraction == pytest.approx(0.95)
    assert isinstance(outcome, Reservation)
    assert outcome.index == 1


def test_at_full_global_budget_everything_is_refused(redis_client):
    budgets = Budgets(redis_client, make_limits(monthly_micro_usd=1_000))
    budgets.reserve([Candidate(1_000, 1, large=False)])

    refusal = budgets.reserve([Candidate(10, 1, large=True), Candidate(1, 1, large=False)])

    assert refusal == Refusal(scope="global_downgrade", global_fraction=1.0)


def test_200_threads_reserving_against_room_for_50_get_exactly_50(redis_client):
    cost = 1_000
    limits = make_limits(run_micro_usd=50 * cost)
    start = time.time() + 0.5

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(
            pool.map(
                lambda _: workers.reserve_many(settings.REDIS_URL, limits, cost, 1, start),
                range(200),
            )
        )
    granted = sum(len(r) for r in results)

    assert granted == 50
    assert Budgets(redis_client, limits).spent(run_id="race")["run_usd"] == 50 * cost


@pytest.mark.slow
def test_200_reservations_from_4_processes_against_room_for_50_get_exactly_50(redis_client):
    cost = 1_000
    limits = make_limits(run_micro_usd=50 * cost)
    start = time.time() + 1.5  # let every process start before they race
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(
            workers.reserve_many, [(settings.REDIS_URL, limits, cost, 50, start)] * 4
        )

    assert sum(len(r) for r in results) == 50
    assert Budgets(redis_client, limits).spent(run_id="race")["run_usd"] == 50 * cost


@pytest.mark.parametrize(
    ("limit_name", "before", "key"),
    [
        ("daily_micro_usd", dt.datetime(2026, 11, 21, 23, 59, 59, 900_000, dt.UTC), "day:20261121"),
        (
            "monthly_micro_usd",
            dt.datetime(2026, 11, 30, 23, 59, 59, 900_000, dt.UTC),
            "month:202611",
        ),
    ],
)
def test_a_reservation_made_before_midnight_settles_on_its_own_day(
    redis_client, limit_name, before, key
):
    budgets = Budgets(redis_client, make_limits(**{limit_name: 1_000}))
    reservation = budgets.reserve([Candidate(800, 1, large=False)], now=before)
    assert isinstance(reservation, Reservation)

    budgets.settle(reservation, micro_usd=300, tokens=1)  # the answer came after midnight
    next_period = budgets.reserve(
        [Candidate(1_000, 1, large=False)], now=before + dt.timedelta(seconds=0.2)
    )

    assert int(redis_client.get(f"{budgets.prefix}:{key}")) == 300
    assert isinstance(next_period, Reservation)  # the new day (month) starts with all its room
