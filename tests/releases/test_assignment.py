"""Which release answers a ticket: canary by a stable hash of the customer, the current one
otherwise, recorded on the run; its model calls use the release's model ids."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledgerly.llm.models import LLMCall
from support import releases, services
from support.models import ReleaseState, Run
from tests.support.conftest import ask, customer, drive

pytestmark = pytest.mark.usefixtures("no_releases", "demo_world", "sim_gateway")

REFS = [f"cus_{n:05d}" for n in range(4000)]


def test_the_first_release_is_seeded_from_the_repo():
    current = releases.release_current()
    assert (current.name, current.state) == ("r1", ReleaseState.CURRENT)
    assert current.model_ids == {"small": "claude-haiku-5-5", "large": "claude-sonnet-5-5"}
    assert current.prompt_versions["faq_answer"] == 1
    assert releases.release_current().pk == current.pk


def test_canary_assignment_is_stable_per_customer(candidate):
    canary = candidate("canary", share="0.3")
    first = [releases.release_for_customer(customer_ref=ref).name for ref in REFS[:300]]
    again = [releases.release_for_customer(customer_ref=ref).name for ref in REFS[:300]]
    assert first == again
    assert set(first) == {"r1", canary.name}
    # Widening the share keeps every customer the canary had.
    releases.release_start(release=canary, mode="canary", share=Decimal("0.6"), actor="test")
    wider = [releases.release_for_customer(customer_ref=ref).name for ref in REFS[:300]]
    assert all(w == canary.name for f, w in zip(first, wider, strict=True) if f == canary.name)


@pytest.mark.parametrize("share", [0.05, 0.3, 0.5])
def test_canary_share_is_near_its_share_over_many_customers(share):
    inside = sum(
        releases.canary_bucket(release_name="r2", customer_ref=ref) < share for ref in REFS
    )
    assert inside / len(REFS) == pytest.approx(share, abs=0.03)


def test_each_canary_tries_another_cohort():
    a = {ref for ref in REFS if releases.canary_bucket(release_name="r2", customer_ref=ref) < 0.3}
    b = {ref for ref in REFS if releases.canary_bucket(release_name="r3", customer_ref=ref) < 0.3}
    assert 0.2 < len(a & b) / len(a) < 0.4  # independent cohorts overlap by about the share


def test_a_run_records_its_release_and_its_calls_use_the_release_model_ids(candidate):
    canary = candidate("canary", share="1", model_ids={"small": "claude-sonnet-5-5"})
    ticket = ask("emma.schulz@example.com", "How long does a refund take to show up on my card?")

    run = Run.objects.get(ticket=ticket)
    assert run.release == canary
    assert run.settled_at is not None
    assert run.outcome == "completed"
    calls = LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="faq_answer")
    assert calls.exists()
    assert set(calls.values_list("model", flat=True)) == {"claude-sonnet-5-5"}
    assert run.checkpoint["versions"]["models"]["faq_answer"] == "claude-sonnet-5-5"


def test_without_a_candidate_the_current_release_answers_with_its_models():
    ticket = ask("emma.schulz@example.com", "How long does a refund take to show up on my card?")

    run = Run.objects.get(ticket=ticket)
    assert run.release == releases.release_current()
    calls = LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="faq_answer")
    assert set(calls.values_list("model", flat=True)) == {"claude-haiku-5-5"}


def test_rollback_stops_new_assignments_at_once(candidate):
    canary = candidate("canary", share="1")
    who = customer("emma.schulz@example.com")
    before = services.ticket_submit(customer=who, text="Which plans do you offer?")
    drive(before)
    assert Run.objects.get(ticket=before).release == canary

    assert releases.release_rollback(release=canary, actor="system", reason="test")
    after = services.ticket_submit(customer=who, text="Which plans do you offer?")
    drive(after)

    assert Run.objects.get(ticket=after).release == releases.release_current()
    assert releases.release_for_customer(customer_ref=who.ref).name == "r1"
    assert Run.objects.get(ticket=before).release == canary  # a run keeps what it began with


def test_one_candidate_at_a_time(candidate):
    candidate("canary", share="0.1")
    other = releases.release_create(name="r3", actor="test")
    with pytest.raises(releases.ReleaseError, match="another candidate"):
        releases.release_start(release=other, mode="shadow", actor="test")


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        ({"prompt_versions": {"faq_answer": 7}}, "has no version 7"),
        ({"prompt_versions": {"no_such_prompt": 1}}, "no prompt named"),
        ({"model_ids": {"small": "claude-unknown-1"}}, "has no price"),
        ({"model_ids": {"medium": "claude-haiku-5-5"}}, "unknown tier"),
    ],
)
def test_a_release_pins_only_what_the_repo_can_serve(no_releases, pins, message):
    with pytest.raises(releases.ReleaseError, match=message):
        releases.release_create(name="bad", actor="test", **pins)


@pytest.mark.parametrize("share", ["0", "1.5", None])
def test_a_canary_needs_a_share_between_0_and_1(no_releases, share):
    release = releases.release_create(name="r2", actor="test")
    with pytest.raises(releases.ReleaseError, match="share"):
        releases.release_start(
            release=release,
            mode="canary",
            share=None if share is None else Decimal(share),
            actor="test",
        )


def test_promote_retires_the_current_release(candidate):
    canary = candidate("canary", share="0.1")
    promoted = releases.release_promote(release=canary, actor="staff:test")
    assert promoted.state == ReleaseState.CURRENT
    assert releases.release_get(name="r1").state == ReleaseState.RETIRED
    assert releases.release_current() == promoted
