"""Staff actions in the Django admin are in the audit trail, as they are on the staff pages:
each action, posted to the admin's own changelist (or change form) by a staff member through
the real test client, writes exactly one AuditEntry naming who, what, which row and
`via="admin:<path>"`, in the action's transaction. A refused action writes nothing."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from billing.models import Customer, RefundRequestState
from memory import services as memory_services
from memory.models import EMBEDDING_DIM, Article, CustomerMemory
from support import apikeys
from support.models import (
    ApiKey,
    AuditEntry,
    DeadLetter,
    Escalation,
    EscalationState,
    KillSwitch,
    RouterExemplar,
    Run,
    RunStatus,
    TicketState,
)
from tests.billing import factories as billing_factories
from tests.staff import factories
from tests.staff.conftest import signed_in

pytestmark = pytest.mark.django_db

ADMIN_APPS = ["billing", "memory", "support"]


def _admin_staff(username: str, *, approver: bool) -> User:
    """Staff (not superuser) with every model permission of the three apps; the refund
    decision only for an approver."""
    user = User.objects.create_user(username, password=factories.PASSWORD, is_staff=True)
    perms = Permission.objects.filter(content_type__app_label__in=ADMIN_APPS)
    if not approver:
        perms = perms.exclude(codename="decide_refundrequest")
    user.user_permissions.set(perms)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def staff() -> User:
    return _admin_staff("admin-approver", approver=True)


@pytest.fixture
def staff_client(staff) -> Client:
    return signed_in(staff)


def _only_entry() -> AuditEntry:
    entries = list(AuditEntry.objects.all())
    assert len(entries) == 1, [(e.action, e.target, e.via) for e in entries]
    return entries[0]


def _who_what(entry: AuditEntry) -> tuple[object, str, str, str]:
    return (entry.actor, entry.action, entry.target, entry.via)


def _act(client: Client, model: str, action: str, *pks: int) -> int:
    url = f"/admin/{model}/"
    return client.post(url, {"action": action, "_selected_action": list(pks)}).status_code


# --- refund requests (billing's admin, re-registered by support) ---------------------------------
@pytest.mark.parametrize(
    ("action", "verb", "state"),
    [
        ("approve_selected", "approve", RefundRequestState.APPROVED),
        ("reject_selected", "reject", RefundRequestState.REJECTED),
    ],
)
def test_an_admin_refund_decision_is_audited(
    staff, staff_client, django_capture_on_commit_callbacks, action, verb, state
):
    request = factories.proposed_request()

    with django_capture_on_commit_callbacks():
        assert _act(staff_client, "billing/refundrequest", action, request.pk) == 302

    request.refresh_from_db()
    assert (request.state, request.decided_by) == (state, staff)
    entry = _only_entry()
    assert _who_what(entry) == (
        staff,
        f"refund_request.{verb}",
        f"refund_request:{request.pk}",
        "admin:/admin/billing/refundrequest/",
    )
    assert entry.detail["amount"] == str(request.amount)


def test_a_non_approver_cannot_decide_in_the_admin_and_nothing_is_recorded():
    viewer = _admin_staff("admin-viewer", approver=False)
    client = signed_in(viewer)
    request = factories.proposed_request()

    listing = client.get("/admin/billing/refundrequest/")
    assert listing.status_code == 200  # may look
    assert b'value="approve_selected"' not in listing.content  # is not offered the decision
    for action in ("approve_selected", "reject_selected"):
        _act(client, "billing/refundrequest", action, request.pk)

    request.refresh_from_db()
    assert (request.state, request.decided_by) == (RefundRequestState.PROPOSED, None)
    assert AuditEntry.objects.count() == 0


def test_a_second_admin_approval_executes_nothing_more_and_records_nothing_more(
    staff, staff_client, django_capture_on_commit_callbacks
):
    request = factories.proposed_request()
    with django_capture_on_commit_callbacks():
        _act(staff_client, "billing/refundrequest", "approve_selected", request.pk)
        _act(staff_client, "billing/refundrequest", "approve_selected", request.pk)

    assert AuditEntry.objects.filter(action="refund_request.approve").count() == 1


def test_the_re_registered_refund_admin_keeps_billings_read_only_form(staff_client):
    request = factories.proposed_request()
    url = f"/admin/billing/refundrequest/{request.pk}/change/"

    page = staff_client.get(url)
    assert page.status_code == 200
    assert b'name="amount"' not in page.content
    assert b'name="state"' not in page.content
    assert staff_client.post(url, {"state": "approved", "_save": "Save"}).status_code == 403
    assert staff_client.get("/admin/billing/refundrequest/add/").status_code == 403
    request.refresh_from_db()
    assert request.state == RefundRequestState.PROPOSED
    assert AuditEntry.objects.count() == 0


# --- escalations and dead letters ---------------------------------------------------------------
def test_resolving_an_escalation_in_the_admin_is_audited(staff, staff_client):
    escalation = factories.escalation()

    assert _act(staff_client, "support/escalation", "resolve", escalation.pk) == 302

    escalation.refresh_from_db()
    escalation.ticket.refresh_from_db()
    assert (escalation.state, escalation.ticket.state) == (
        EscalationState.RESOLVED,
        TicketState.ANSWERED,
    )
    assert _who_what(_only_entry()) == (
        staff,
        "escalation.resolve",
        f"escalation:{escalation.pk}",
        "admin:/admin/support/escalation/",
    )
    _act(staff_client, "support/escalation", "resolve", escalation.pk)  # resolved already
    assert AuditEntry.objects.count() == 1


def test_retrying_a_dead_letter_in_the_admin_is_audited(
    staff, staff_client, django_capture_on_commit_callbacks
):
    letter = factories.dead_letter()

    with django_capture_on_commit_callbacks():
        assert _act(staff_client, "support/deadletter", "retry", letter.pk) == 302

    letter.refresh_from_db()
    assert letter.retried_at is not None
    assert Run.objects.get(pk=letter.run_id).status != RunStatus.FAILED
    assert _who_what(_only_entry()) == (
        staff,
        "dead_letter.retry",
        f"dead_letter:{letter.pk}",
        "admin:/admin/support/deadletter/",
    )


def test_discarding_a_dead_letter_in_the_admin_is_audited(staff, staff_client):
    letter = factories.dead_letter()

    assert _act(staff_client, "support/deadletter", "discard", letter.pk) == 302

    assert DeadLetter.objects.get(pk=letter.pk).discarded_at is not None
    assert _who_what(_only_entry()) == (
        staff,
        "dead_letter.discard",
        f"dead_letter:{letter.pk}",
        "admin:/admin/support/deadletter/",
    )


# --- kill switches (a change form: audited through staff_actions) -------------------------------
def test_pulling_and_releasing_a_kill_switch_in_the_admin_is_audited(staff, staff_client):
    add = "/admin/support/killswitch/add/"
    form = {"scope": "global", "enabled": "on", "reason": "model outage"}

    assert staff_client.post(add, {**form, "_save": "Save"}).status_code == 302

    switch = KillSwitch.objects.get(scope="global")
    assert (switch.enabled, switch.reason, switch.updated_by) == (
        True,
        "model outage",
        "staff:admin-approver",
    )
    assert _who_what(_only_entry()) == (
        staff,
        "kill_switch.on",
        "kill_switch:global",
        f"admin:{add}",
    )

    change = f"/admin/support/killswitch/{switch.pk}/change/"
    assert staff_client.post(change, {"reason": "", "_save": "Save"}).status_code == 302
    switch.refresh_from_db()
    assert switch.enabled is False
    off = AuditEntry.objects.get(action="kill_switch.off")
    assert (off.actor, off.target, off.via) == (staff, "kill_switch:global", f"admin:{change}")
    assert AuditEntry.objects.count() == 2


def test_a_kill_switch_without_a_reason_is_refused_and_nothing_is_recorded(staff_client):
    customer = billing_factories.customer()
    response = staff_client.post(
        "/admin/support/killswitch/add/",
        {"scope": "customer", "customer": customer.pk, "enabled": "on", "_save": "Save"},
    )

    assert response.status_code == 200  # the form again, with the error
    assert "give a reason" in response.content.decode()
    assert (KillSwitch.objects.count(), AuditEntry.objects.count()) == (0, 0)


def test_a_kill_switch_is_turned_off_not_deleted(staff_client):
    staff_client.post(
        "/admin/support/killswitch/add/",
        {"scope": "global", "enabled": "on", "reason": "x", "_save": "Save"},
    )
    switch = KillSwitch.objects.get()

    delete = f"/admin/support/killswitch/{switch.pk}/delete/"
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert KillSwitch.objects.filter(pk=switch.pk, enabled=True).exists()


# --- API keys -----------------------------------------------------------------------------------
def test_creating_an_api_key_in_the_admin_is_audited(staff, staff_client):
    customer = billing_factories.customer()
    add = "/admin/support/apikey/add/"

    response = staff_client.post(
        add, {"name": "crm", "scopes": ["tickets"], "owner": staff.pk, "customer": customer.pk}
    )

    assert response.status_code == 200
    plaintext = re.search(
        r"<code>([0-9a-f]{12}\.[A-Za-z0-9_-]{43})</code>", response.content.decode()
    )
    assert plaintext is not None
    key = ApiKey.objects.get()
    entry = _only_entry()
    assert _who_what(entry) == (staff, "api_key.create", f"api_key:{key.prefix}", f"admin:{add}")
    assert entry.detail == {
        "name": "crm",
        "scopes": ["tickets"],
        "owner": staff.username,
        "customer": customer.ref,
    }
    assert plaintext.group(1).split(".")[1] not in str(entry.detail)  # the secret is not kept


def test_rotating_and_revoking_an_api_key_in_the_admin_are_audited(staff, staff_client):
    customer = billing_factories.customer()
    one = apikeys.api_key_create(name="one", scopes=["tickets"], owner=staff, customer=customer)
    two = apikeys.api_key_create(name="two", scopes=["tickets"], owner=staff, customer=customer)
    listing = "admin:/admin/support/apikey/"

    assert _act(staff_client, "support/apikey", "rotate", one.api_key.pk) == 200
    rotated = _only_entry()
    new = ApiKey.objects.get(replaces=one.api_key)
    assert _who_what(rotated) == (staff, "api_key.rotate", f"api_key:{one.api_key.prefix}", listing)
    assert rotated.detail["new"] == new.prefix

    assert _act(staff_client, "support/apikey", "revoke", two.api_key.pk) == 302
    revoked = AuditEntry.objects.get(action="api_key.revoke")
    assert _who_what(revoked) == (staff, "api_key.revoke", f"api_key:{two.api_key.prefix}", listing)

    # Refused (rotated already; revoked already): nothing more is recorded.
    _act(staff_client, "support/apikey", "rotate", one.api_key.pk)
    _act(staff_client, "support/apikey", "revoke", two.api_key.pk)
    assert AuditEntry.objects.count() == 2


def test_an_api_key_is_revoked_not_deleted(staff, staff_client):
    key = apikeys.api_key_create(name="k", scopes=["tickets"], owner=staff).api_key
    response = staff_client.post(f"/admin/support/apikey/{key.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()


# --- help-center articles (memory's admin, re-registered by support) -----------------------------
@pytest.fixture
def article(redis_client) -> Article:
    return memory_services.article_create(
        slug="sepa-payments",
        title="Paying by SEPA Direct Debit",
        section="Payments",
        body="# SEPA\n\nEUR accounts can pay by SEPA Direct Debit.",
        keywords="sepa",
    )


def test_editing_an_article_in_the_admin_is_audited(staff, staff_client, article):
    change = f"/admin/memory/article/{article.pk}/change/"
    form = {"title": article.title, "section": "Payments", "keywords": "sepa", "_save": "Save"}

    response = staff_client.post(change, {**form, "body": "# SEPA\n\nNow also for CHF."})

    assert response.status_code == 302
    article.refresh_from_db()
    assert article.body == "# SEPA\n\nNow also for CHF."
    entry = _only_entry()
    assert _who_what(entry) == (staff, "article.edit", "article:sepa-payments", f"admin:{change}")
    assert entry.detail["changed"] is True


def test_adding_and_reindexing_an_article_in_the_admin_are_audited(
    staff, staff_client, redis_client
):
    add = "/admin/memory/article/add/"
    form = {
        "slug": "new-one",
        "title": "New",
        "section": "S",
        "body": "# New\n\nText.",
        "keywords": "",
    }
    assert staff_client.post(add, {**form, "_save": "Save"}).status_code == 302
    article = Article.objects.get(slug="new-one")
    assert _who_what(_only_entry()) == (staff, "article.create", "article:new-one", f"admin:{add}")

    assert _act(staff_client, "memory/article", "reindex", article.pk) == 302
    reindex = AuditEntry.objects.get(action="article.reindex")
    assert (reindex.actor, reindex.target, reindex.via) == (
        staff,
        "article:new-one",
        "admin:/admin/memory/article/",
    )

    # Deleting is refused by the admin itself (an article's chunks are not deletable there).
    delete = f"/admin/memory/article/{article.pk}/delete/"
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert Article.objects.filter(slug="new-one").exists()
    assert AuditEntry.objects.count() == 2


# --- the other writable admin forms: customers, plans, exemplars, customer memories -------------
def test_editing_a_customer_in_the_admin_is_audited_without_the_values(staff, staff_client):
    customer = billing_factories.customer()
    change = f"/admin/billing/customer/{customer.pk}/change/"
    page = staff_client.get(change)
    assert page.status_code == 200
    form = {
        "email": "new-address@example.test",
        "name": customer.name,
        "country": customer.country,
        "vat_id": customer.vat_id,
        "user": "",
        "_save": "Save",
    }

    response = staff_client.post(change, form)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Customer.objects.get(pk=customer.pk).email == "new-address@example.test"
    entry = _only_entry()
    assert _who_what(entry) == (
        staff,
        "customer.change",
        f"customer:{customer.pk}",
        f"admin:{change}",
    )
    assert entry.detail == {"changed": ["email"]}


def test_adding_a_router_exemplar_in_the_admin_is_audited(staff, staff_client):
    add = "/admin/support/routerexemplar/add/"
    text = "can I get my money back for last month"

    response = staff_client.post(add, {"text": text, "lane": "refund", "_save": "Save"})

    assert response.status_code == 302
    exemplar = RouterExemplar.objects.get(text=text)
    assert _who_what(_only_entry()) == (
        staff,
        "routerexemplar.add",
        f"routerexemplar:{exemplar.pk}",
        f"admin:{add}",
    )


def test_forgetting_a_customer_memory_in_the_admin_is_audited(staff, staff_client):
    customer = billing_factories.customer()
    memory = CustomerMemory.objects.create(
        customer=customer,
        text="prefers email",
        content_hash="x",
        embedding=[0.0] * EMBEDDING_DIM,
        source="staff",
        created_at=timezone.now(),
    )

    delete = f"/admin/memory/customermemory/{memory.pk}/delete/"
    assert staff_client.post(delete, {"post": "yes"}).status_code == 302

    assert not CustomerMemory.objects.filter(pk=memory.pk).exists()
    entry = _only_entry()
    assert _who_what(entry) == (
        staff,
        "customermemory.delete",
        f"customermemory:{memory.pk}",
        f"admin:{delete}",
    )
    assert "prefers email" not in str(entry.detail)


def test_escalation_and_dead_letter_rows_stay_read_only(staff_client):
    escalation = factories.escalation()
    url = f"/admin/support/escalation/{escalation.pk}/change/"
    assert staff_client.post(url, {"state": "resolved", "_save": "Save"}).status_code == 403
    assert Escalation.objects.get(pk=escalation.pk).state == EscalationState.OPEN
    assert AuditEntry.objects.count() == 0
