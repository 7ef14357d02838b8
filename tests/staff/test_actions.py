"""The staff actions through their pages: escalations (claim, reply into the customer's chat,
resolve), dead letters (retry, discard), kill switches (on: new runs stop) and help-center
articles (edit, re-index). Each writes its audit entry with who, what and which page."""

from __future__ import annotations

import pytest

from memory.models import Message, MessageRole
from support import events
from support.models import (
    AuditEntry,
    DeadLetter,
    Escalation,
    EscalationState,
    KillSwitch,
    Run,
    RunStatus,
    Ticket,
    TicketState,
)
from tests.billing import factories as billing_factories
from tests.staff import factories
from tests.staff.conftest import signed_in

pytestmark = pytest.mark.django_db


def _entry(action: str) -> AuditEntry:
    return AuditEntry.objects.get(action=action)


# --- escalations ----------------------------------------------------------------------------------
def test_claiming_an_escalation_takes_it_once(viewer, viewer_client, approver):
    escalation = factories.escalation()
    url = f"/staff/escalations/{escalation.pk}/claim"
    assert viewer_client.post(url).status_code == 302
    escalation.refresh_from_db()
    assert (escalation.state, escalation.claimed_by) == (EscalationState.CLAIMED, viewer)
    entry = _entry("escalation.claim")
    assert (entry.actor, entry.target, entry.via) == (
        viewer,
        f"escalation:{escalation.pk}",
        f"page:{url}",
    )

    second = signed_in(approver).post(url)
    assert second.status_code == 409
    assert "claimed by viewer" in second.content.decode()
    escalation.refresh_from_db()
    assert escalation.claimed_by == viewer
    assert AuditEntry.objects.filter(action="escalation.claim").count() == 1


def test_a_staff_reply_lands_in_the_customers_chat_and_its_live_events(
    viewer, viewer_client, redis_client, django_capture_on_commit_callbacks
):
    escalation = factories.escalation()
    ticket = escalation.ticket
    url = f"/staff/escalations/{escalation.pk}/reply"
    with django_capture_on_commit_callbacks(execute=True):
        response = viewer_client.post(url, {"text": "  Hi, I'm Sam from billing. Looking now.  "})
    assert response.status_code == 302

    last = Message.objects.filter(conversation=ticket.conversation).order_by("-seq")[0]
    assert last.role == MessageRole.STAFF
    assert last.content == "Hi, I'm Sam from billing. Looking now."
    ticket.refresh_from_db()
    assert ticket.reply == last.content
    assert ticket.state == TicketState.ESCALATED  # still with staff until resolved
    escalation.refresh_from_db()
    assert (escalation.state, escalation.claimed_by) == (EscalationState.CLAIMED, viewer)
    kept = events.events_since(ticket_id=ticket.pk, after=None)
    published = [e for e in kept if e.kind == "reply"]
    assert [(e.data["text"], e.data["role"], e.data["message_seq"]) for e in published] == [
        (last.content, "staff", last.seq)
    ]
    entry = _entry("escalation.reply")
    assert (entry.actor, entry.via) == (viewer, f"page:{url}")
    assert entry.detail["message_seq"] == last.seq
    page = viewer_client.get(f"/staff/escalations/{escalation.pk}/").content.decode()
    assert "Looking now." in page


@pytest.mark.parametrize("text", ["", "   ", "\x00"])
def test_an_empty_reply_is_refused_and_nothing_is_posted(viewer_client, text):
    escalation = factories.escalation()
    before = Message.objects.filter(conversation=escalation.ticket.conversation).count()
    response = viewer_client.post(f"/staff/escalations/{escalation.pk}/reply", {"text": text})
    assert response.status_code == 400
    assert Message.objects.filter(conversation=escalation.ticket.conversation).count() == before
    assert not AuditEntry.objects.exists()


def test_resolving_closes_the_escalation_and_the_ticket_counts_as_answered(viewer, viewer_client):
    escalation = factories.escalation()
    url = f"/staff/escalations/{escalation.pk}/resolve"
    assert viewer_client.post(url).status_code == 302
    escalation.refresh_from_db()
    assert escalation.state == EscalationState.RESOLVED
    assert escalation.resolved_at is not None
    assert Ticket.objects.get(pk=escalation.ticket_id).state == TicketState.ANSWERED
    assert _entry("escalation.resolve").actor == viewer

    assert viewer_client.post(url).status_code == 409  # once
    late = viewer_client.post(f"/staff/escalations/{escalation.pk}/reply", {"text": "hello?"})
    assert late.status_code == 409
    assert AuditEntry.objects.count() == 1


def test_the_inbox_lists_live_escalations(viewer_client):
    live = factories.escalation()
    done = factories.escalation()
    Escalation.objects.filter(pk=done.pk).update(state=EscalationState.RESOLVED)
    page = viewer_client.get("/staff/escalations/").content.decode()
    assert f'data-testid="escalation-row-{live.pk}"' in page
    assert f'data-testid="escalation-row-{done.pk}"' not in page
    everything = viewer_client.get("/staff/escalations/?show=resolved").content.decode()
    assert f'data-testid="escalation-row-{done.pk}"' in everything


# --- dead letters ---------------------------------------------------------------------------------
def test_retrying_a_dead_letter_resumes_its_run_once(viewer, viewer_client):
    letter = factories.dead_letter()
    page = viewer_client.get("/staff/dead-letters/").content.decode()
    assert f'data-testid="retry-button-{letter.pk}"' in page

    url = f"/staff/dead-letters/{letter.pk}/retry"
    assert viewer_client.post(url).status_code == 302
    letter.refresh_from_db()
    assert letter.retried_at is not None
    assert Run.objects.get(pk=letter.run_id).status == RunStatus.READY
    assert Ticket.objects.get(run__pk=letter.run_id).state == TicketState.IN_LANE
    entry = _entry("dead_letter.retry")
    assert (entry.actor, entry.target, entry.via) == (
        viewer,
        f"dead_letter:{letter.pk}",
        f"page:{url}",
    )

    again = viewer_client.post(url, follow=True)
    assert "nothing changed" in again.content.decode()
    assert AuditEntry.objects.filter(action="dead_letter.retry").count() == 1


def test_discarding_a_dead_letter_leaves_the_run_failed(viewer_client):
    letter = factories.dead_letter()
    assert viewer_client.post(f"/staff/dead-letters/{letter.pk}/discard").status_code == 302
    letter.refresh_from_db()
    assert letter.discarded_at is not None
    assert Run.objects.get(pk=letter.run_id).status == RunStatus.FAILED
    assert viewer_client.post(f"/staff/dead-letters/{letter.pk}/retry").status_code == 302
    assert DeadLetter.objects.get(pk=letter.pk).retried_at is None  # a discarded one stays so
    assert list(AuditEntry.objects.values_list("action", flat=True)) == ["dead_letter.discard"]


# --- kill switches --------------------------------------------------------------------------------
def test_turning_a_switch_on_needs_a_reason(viewer_client):
    response = viewer_client.post(
        "/staff/kill-switches/set", {"scope": "global", "enabled": "on", "reason": " "}
    )
    assert response.status_code == 400
    assert not KillSwitch.objects.exists()
    assert not AuditEntry.objects.exists()


def test_a_customer_switch_for_an_unknown_email_is_refused(viewer_client):
    response = viewer_client.post(
        "/staff/kill-switches/set",
        {"scope": "customer", "customer": "nobody@example.test", "enabled": "on", "reason": "x"},
    )
    assert response.status_code == 400
    assert not KillSwitch.objects.exists()


@pytest.mark.parametrize("scope", ["global", "customer"])
def test_switching_on_and_off_is_recorded(viewer, viewer_client, scope):
    who = billing_factories.customer()
    form = {"scope": scope, "customer": who.email if scope == "customer" else ""}
    on = viewer_client.post("/staff/kill-switches/set", {**form, "enabled": "on", "reason": "bad"})
    assert on.status_code == 302
    switch = KillSwitch.objects.get()
    assert (switch.enabled, switch.reason, switch.updated_by) == (True, "bad", "staff:viewer")
    assert switch.customer == (who if scope == "customer" else None)
    off = viewer_client.post("/staff/kill-switches/set", {**form, "enabled": "off", "reason": ""})
    assert off.status_code == 302
    assert not KillSwitch.objects.get().enabled
    target = f"kill_switch:{who.ref}" if scope == "customer" else "kill_switch:global"
    entries = AuditEntry.objects.order_by("id")
    assert [(e.action, e.target, e.actor, e.detail["reason"]) for e in entries] == [
        ("kill_switch.on", target, viewer, "bad"),
        ("kill_switch.off", target, viewer, ""),
    ]
    assert {e.via for e in entries} == {"page:/staff/kill-switches/set"}
