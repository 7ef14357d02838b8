"""Review of releases: what a rollback stops, and the check when the current release has no
runs in the window."""

from __future__ import annotations

import json

import pytest

from ledgerly.llm.models import LLMCall
from support import releases, services
from support.models import ReleaseState, Run
from tests.support.conftest import customer, drive

pytestmark = pytest.mark.usefixtures("no_releases", "demo_world", "sim_gateway")

QUESTION = "How long does a refund take to show up on my card?"


def test_a_rolled_back_canary_answers_no_follow_up_of_the_tickets_it_began(candidate, settings):
    settings.SUPPORT_SEMANTIC_CACHE = False  # every answer is a model call
    canary = candidate("canary", share="1", model_ids={"small": "claude-sonnet-5-5"})
    who = customer("emma.schulz@example.com")
    ticket = services.ticket_submit(customer=who, text=QUESTION)
    drive(ticket)
    first = set(
        LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="faq_answer").values_list(
            "pk", flat=True
        )
    )
    assert set(LLMCall.objects.filter(pk__in=first).values_list("model", flat=True)) == {
        "claude-sonnet-5-5"
    }

    assert releases.release_rollback(release=canary, actor="system", reason="p95 latency")
    services.ticket_submit(customer=who, text="And can I pay by SEPA direct debit?", ticket=ticket)
    drive(ticket)

    later = LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="faq_answer").exclude(
        pk__in=first
    )
    assert later.exists()
    # The rolled-back release makes no more calls: its pins are the current release's now.
    assert set(later.values_list("model", flat=True)) == {"claude-haiku-5-5"}
    run = Run.objects.get(ticket=ticket)
    assert run.release == canary  # the record of what the run began with stays
    canary.refresh_from_db()
    assert canary.state == ReleaseState.ROLLED_BACK


JONAS_MIXED = (
    "Two things: I want a refund for my last invoice, and please reissue it with my VAT ID "
    "DE123456789 on it."
)


def test_a_late_shadow_sees_only_its_message_and_writes_no_summary(candidate, settings):
    """A shadow queued behind the live run starts after the live reply and the customer's next
    messages are in the conversation: it must answer its message as the live run did, from
    that message alone, and leave the conversation's summary (which the live run reads) alone."""
    from memory import services as memory_services
    from memory.models import Conversation
    from tests.releases.test_shadow import drive_run

    settings.RELEASE_SHADOW_SAMPLE = 1.0
    settings.CONTEXT_TOKEN_BUDGET = 200  # the smallest: older turns fall out into a summary
    candidate("shadow", model_ids={"small": "claude-sonnet-5-5"})
    ticket = services.ticket_submit(customer=customer("jonas.berg@example.com"), text=JONAS_MIXED)
    live = Run.objects.get(ticket=ticket)
    releases.run_release_assign(run=live)
    shadow_run = Run.objects.get(shadow_of=live)
    later = "the live run already answered this " + "word " * 300 + " LATE-MARKER"
    for role in ("assistant", "customer", "assistant", "customer"):
        memory_services.message_append(conversation=ticket.conversation, role=role, content=later)

    drive_run(shadow_run)

    shadow_run.refresh_from_db()
    assert shadow_run.settled_at is not None
    sent = json.dumps(shadow_run.checkpoint.get("lane_state", {}).get("messages", []))
    assert "LATE-MARKER" not in sent
    assert JONAS_MIXED in sent
    conversation = Conversation.objects.get(pk=ticket.conversation_id)
    assert (conversation.summary, conversation.summary_through_seq) == ("", 0)


def test_with_no_current_runs_in_the_window_a_good_candidate_stays(candidate, runs_of):
    canary = candidate("canary", share="1")
    runs_of(canary, 25, latency_s=3.0, cost="0.0200")

    found = releases.releases_check()

    canary.refresh_from_db()
    assert found["rollback"] is False
    assert canary.state == ReleaseState.CANARY
    assert found["current"]["runs"] == 0


def test_a_current_release_that_cost_nothing_divides_nothing(candidate, runs_of):
    canary = candidate("canary", share="0.5")
    runs_of(canary, 25, cost="0.0200")
    runs_of(releases.release_current(), 25, cost="0", latency_s=0.0)

    found = releases.releases_check()

    assert found["rollback"] is False  # no ratio against zero (answered from the cache)


def test_two_beats_rolling_back_at_once_record_one_rollback(candidate):
    import threading

    from django.db import connection

    canary = candidate("canary", share="1")
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def roll(actor: str) -> None:
        try:
            barrier.wait()
            results.append(
                releases.release_rollback(release=canary, actor=actor, reason=f"by {actor}")
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=roll, args=(a,)) for a in ("beat-1", "beat-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    canary.refresh_from_db()
    assert sorted(results) == [False, True]
    assert canary.state == ReleaseState.ROLLED_BACK
    assert canary.rollback_reason == f"by {canary.rolled_back_by}"
