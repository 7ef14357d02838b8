"""Review of releases: what a rollback stops, and the check when the current release has no
runs in the window."""

from __future__ import annotations

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
