"""Automatic rollback: the candidate against the current release over the same window, from
Run rows with known latencies, costs and outcomes."""

from __future__ import annotations

import datetime as dt

import pytest

from support import releases, runner, tasks
from support.models import ReleaseState, Run, RunStatus

pytestmark = pytest.mark.usefixtures("no_releases", "demo_world")


@pytest.fixture(autouse=True)
def thresholds(settings):
    settings.RELEASE_MIN_SAMPLE = 20
    settings.RELEASE_WINDOW_MINUTES = 60
    settings.RELEASE_MIN_COMPLETION_RATE = 0.85
    settings.RELEASE_MAX_LATENCY_RATIO = 2.0
    settings.RELEASE_MAX_COST_RATIO = 1.5
    settings.RELEASE_MAX_ERROR_RATE = 0.05


def healthy_current(runs_of, n: int = 20) -> None:
    runs_of(releases.release_current(), n, latency_s=4.0, cost="0.0100")


# Each case: the candidate's runs (count, latency, cost, outcome) and the reason it must give.
CROSSINGS = {
    "completion": ([(16, 4.0, "0.0100", "completed"), (4, 4.0, "0.0100", "capped")], "completion"),
    "latency": ([(20, 8.5, "0.0100", "completed")], "p95 latency"),
    "cost": ([(20, 4.0, "0.0160", "completed")], "cost per ticket"),
    "error_rate": ([(18, 4.0, "0.0100", "completed"), (2, 4.0, "0.0100", "error")], "error rate"),
}


@pytest.mark.parametrize("crossing", sorted(CROSSINGS))
def test_each_threshold_rolls_the_candidate_back(crossing, candidate, runs_of):
    healthy_current(runs_of)
    release = candidate("canary", share="0.5")
    groups, reason = CROSSINGS[crossing]
    for n, latency, cost, outcome in groups:
        runs_of(release, n, latency_s=latency, cost=cost, outcome=outcome)

    found = tasks.check_releases.run()

    assert found["rollback"] is True
    assert len(found["reasons"]) == 1
    assert reason in found["reasons"][0]
    release.refresh_from_db()
    assert release.state == ReleaseState.ROLLED_BACK
    assert release.rolled_back_by == "system"
    assert release.rolled_back_at is not None
    assert reason in release.rollback_reason
    assert release.rollback_metrics["candidate"]["runs"] == 20
    assert release.rollback_metrics["current"]["runs"] == 20


@pytest.mark.parametrize("crossing", sorted(CROSSINGS))
def test_just_inside_each_threshold_keeps_the_candidate(crossing, candidate, runs_of):
    healthy_current(runs_of)
    release = candidate("canary", share="0.5")
    inside = {
        "completion": [(17, 4.0, "0.0100", "completed"), (3, 4.0, "0.0100", "capped")],  # 85%
        "latency": [(20, 8.0, "0.0100", "completed")],  # exactly 2x
        "cost": [(20, 4.0, "0.0150", "completed")],  # exactly 1.5x
        "error_rate": [(19, 4.0, "0.0100", "completed"), (1, 4.0, "0.0100", "error")],  # 5%
    }[crossing]
    for n, latency, cost, outcome in inside:
        runs_of(release, n, latency_s=latency, cost=cost, outcome=outcome)

    found = releases.releases_check()

    assert found["rollback"] is False, found["reasons"]
    release.refresh_from_db()
    assert release.state == ReleaseState.CANARY


def test_below_the_minimum_sample_nothing_is_decided(candidate, runs_of):
    healthy_current(runs_of)
    release = candidate("canary", share="0.5")
    runs_of(release, 19, outcome="error", latency_s=60.0, cost="0.5")

    found = releases.releases_check()

    assert found["rollback"] is False
    assert "fewer than the minimum of 20" in found["note"]
    release.refresh_from_db()
    assert release.state == ReleaseState.CANARY


def test_runs_outside_the_window_do_not_count(candidate, runs_of):
    healthy_current(runs_of)
    release = candidate("canary", share="0.5")
    runs_of(release, 20, outcome="error", ago=dt.timedelta(minutes=61))
    runs_of(release, 20)

    assert releases.releases_check()["rollback"] is False


def test_a_ticket_unsettled_long_after_it_began_counts_as_not_completed(
    candidate, runs_of, settings
):
    settings.RELEASE_INCOMPLETE_AFTER_SECONDS = 600
    healthy_current(runs_of)
    release = candidate("canary", share="0.5")
    runs_of(release, 16)
    runs_of(release, 4, settled=False, ago=dt.timedelta(minutes=20))  # stuck
    runs_of(release, 30, settled=False, ago=dt.timedelta(minutes=1))  # still on time

    metrics = releases.release_compare(candidate=release).candidate
    assert metrics is not None
    assert (metrics.runs, metrics.completed) == (20, 16)
    assert releases.releases_check()["rollback"] is True


def test_a_rate_the_current_release_suffers_alike_is_not_the_candidates_fault(candidate, runs_of):
    current = releases.release_current()
    runs_of(current, 18)
    runs_of(current, 2, outcome="error")  # an outage hits both
    release = candidate("canary", share="0.5")
    runs_of(release, 18)
    runs_of(release, 2, outcome="error")

    assert releases.releases_check()["rollback"] is False


def test_metrics_are_per_release(candidate, runs_of):
    current = releases.release_current()
    runs_of(current, 10, latency_s=1.0, cost="0.0200")
    release = candidate("canary", share="0.5")
    runs_of(release, 19, latency_s=3.0, cost="0.0100")
    runs_of(release, 1, latency_s=30.0, cost="0.0100", outcome="error")
    now = dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=1)

    mine = releases.release_metrics(release=release, since=since, until=now)
    theirs = releases.release_metrics(release=current, since=since, until=now)

    assert (mine.runs, mine.completed, mine.errors) == (20, 19, 1)
    assert mine.completion_rate == pytest.approx(0.95)
    assert mine.error_rate == pytest.approx(0.05)
    assert mine.p95_latency_s == pytest.approx(3.0)  # nearest rank: the 19th of 20
    assert str(mine.cost_per_ticket_usd) == "0.010000"
    assert (theirs.runs, str(theirs.cost_per_ticket_usd)) == (10, "0.020000")


def test_a_shadow_candidate_is_measured_on_its_shadow_runs_and_stops_when_rolled_back(
    candidate, runs_of
):
    healthy_current(runs_of)
    release = candidate("shadow")
    runs_of(release, 20, latency_s=12.0, shadow=True)
    pending = Run.objects.filter(release=release).first()
    assert pending is not None
    Run.objects.filter(pk=pending.pk).update(status=RunStatus.READY)

    found = releases.releases_check()

    assert found["rollback"] is True
    assert "p95 latency" in found["reasons"][0]
    assert runner.advance(run_id=pending.pk, step=pending.step) == "shadow-stopped"
    assert Run.objects.get(pk=pending.pk).status == RunStatus.IDLE


def test_staff_roll_back_by_hand_with_who_and_why(candidate):
    release = candidate("canary", share="0.2")

    assert releases.release_rollback(release=release, actor="staff:maria", reason="odd replies")
    assert not releases.release_rollback(release=release, actor="staff:maria", reason="again")

    release.refresh_from_db()
    assert (release.state, release.rolled_back_by, release.rollback_reason) == (
        ReleaseState.ROLLED_BACK,
        "staff:maria",
        "odd replies",
    )
