"""Bad input on the staff pages gets a clear 4xx and changes nothing (never a 5xx)."""

from __future__ import annotations

import pytest

from billing.models import RefundRequest, RefundRequestState
from memory import services as memory_services
from support.models import AuditEntry, KillSwitch
from tests.staff import factories

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"scope": "planet", "enabled": "on", "reason": "x"},
        {"scope": "global", "enabled": "maybe", "reason": "x"},
        {"scope": "global", "enabled": "on", "reason": "x" * 201},
        {"scope": "customer", "customer": "", "enabled": "on", "reason": "x"},
        {"scope": "customer", "customer": "a" * 300, "enabled": "on", "reason": "x"},
        {"scope": "global", "enabled": "on", "reason": "\x00\x00"},
    ],
)
def test_a_bad_kill_switch_form_is_a_400(viewer_client, form):
    assert viewer_client.post("/staff/kill-switches/set", form).status_code == 400
    assert not KillSwitch.objects.exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_decision_note_over_the_limit_is_a_400(approver_client, verb, redis_client):
    request = factories.proposed_request()
    response = approver_client.post(f"/staff/approvals/{request.pk}/{verb}", {"note": "x" * 2001})
    assert response.status_code == 400
    assert RefundRequest.objects.get(pk=request.pk).state == RefundRequestState.PROPOSED


def test_a_reply_over_the_limit_is_a_400(viewer_client):
    escalation = factories.escalation()
    response = viewer_client.post(
        f"/staff/escalations/{escalation.pk}/reply", {"text": "x" * 20_001}
    )
    assert response.status_code == 400
    assert not AuditEntry.objects.exists()


def test_an_overlong_article_title_is_a_400(viewer_client, redis_client):
    article = memory_services.article_create(
        slug="vat", title="VAT", section="Tax", body="EU customers pay VAT."
    )
    response = viewer_client.post(
        "/staff/articles/vat/",
        {"title": "x" * 201, "section": "Tax", "body": "EU customers pay VAT.", "keywords": ""},
    )
    assert response.status_code == 400
    article.refresh_from_db()
    assert article.title == "VAT"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/staff/approvals/1/approve"),
        ("post", "/staff/approvals/"),
        ("post", "/staff/operations/"),
        ("get", "/staff/escalations/1/claim"),
        ("get", "/staff/kill-switches/set"),
    ],
)
def test_the_wrong_method_is_a_405(viewer_client, method, url):
    assert getattr(viewer_client, method)(url).status_code == 405


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/staff/approvals/abc/"),
        ("get", "/staff/escalations/-1/"),
        ("post", "/staff/dead-letters/99/retry"),
        ("post", "/staff/escalations/99/resolve"),
    ],
)
def test_unknown_ids_are_404(viewer_client, method, url):
    assert getattr(viewer_client, method)(url).status_code == 404
