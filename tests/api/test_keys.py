"""API key lifecycle: stored hashed, shown once, rotated with a grace period, revoked at once,
refused once expired; the management command and the admin."""

from __future__ import annotations

import datetime as dt
import io
import re
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone

from support.apikeys import (
    ApiKeyError,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
)
from support.models import ApiKey
from tests.api.conftest import bearer

pytestmark = pytest.mark.django_db(transaction=True)

KEY_SHAPE = re.compile(r"^[0-9a-f]{12}\.[A-Za-z0-9_-]{43}$")


def _status(client, key: str) -> int:
    return client.get("/api/v1/tickets", headers=bearer(key)).status_code


def test_a_key_is_stored_hashed_and_its_secret_appears_in_no_column(approver, customer_a):
    issued = api_key_create(name="crm", scopes=["tickets"], owner=approver, customer=customer_a)
    prefix, secret = issued.plaintext.split(".")

    assert KEY_SHAPE.match(issued.plaintext)
    row = ApiKey.objects.values().get(pk=issued.api_key.pk)
    assert row["prefix"] == prefix
    assert all(secret not in str(value) for value in row.values())
    assert len(row["key_hash"]) == 64
    assert api_key_authenticate(token=issued.plaintext) == issued.api_key
    assert api_key_authenticate(token=f"{prefix}.{secret[:-1]}x") is None
    assert api_key_authenticate(token=secret) is None


def test_unknown_scope_and_empty_name_are_refused(approver):
    with pytest.raises(ApiKeyError):
        api_key_create(name="x", scopes=["admin"], owner=approver)
    with pytest.raises(ApiKeyError):
        api_key_create(name="x", scopes=[], owner=approver)
    with pytest.raises(ApiKeyError):
        api_key_create(name="  ", scopes=["tickets"], owner=approver)


def test_rotation_keeps_the_old_key_valid_for_the_grace_period_then_refuses_it(
    api_client, approver, customer_a, settings
):
    settings.API_KEY_ROTATION_GRACE_SECONDS = 2
    issued = api_key_create(name="crm", scopes=["tickets"], owner=approver, customer=customer_a)

    new = api_key_rotate(api_key=issued.api_key)

    assert new.plaintext != issued.plaintext
    assert new.api_key.scopes == ["tickets"]
    assert new.api_key.customer_id == customer_a.pk
    assert issued.api_key.replaced_by_id == new.api_key.pk
    assert _status(api_client, issued.plaintext) == 200  # both valid during the grace period
    assert _status(api_client, new.plaintext) == 200
    time.sleep(2.2)
    assert _status(api_client, issued.plaintext) == 401
    assert _status(api_client, new.plaintext) == 200
    with pytest.raises(ApiKeyError):
        api_key_rotate(api_key=issued.api_key)  # rotated already


def test_revocation_is_immediate(api_client, make_key, customer_a):
    key = make_key("tickets", customer=customer_a)
    assert _status(api_client, key) == 200

    assert api_key_revoke(api_key=ApiKey.objects.get(prefix=key.split(".")[0])) is True

    response = api_client.get("/api/v1/tickets", headers=bearer(key))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_an_expired_key_is_refused(api_client, make_key, customer_a):
    expired = make_key(
        "tickets", customer=customer_a, expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    live = make_key(
        "tickets", customer=customer_a, expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    assert _status(api_client, expired) == 401
    assert _status(api_client, live) == 200


def test_a_deactivated_owner_s_keys_stop_working(api_client, make_key, customer_a, approver):
    key = make_key("tickets", customer=customer_a)
    User.objects.filter(pk=approver.pk).update(is_active=False)
    assert _status(api_client, key) == 401


def test_a_staff_key_stops_working_when_its_owner_is_no_longer_staff(
    api_client, make_key, approver
):
    key = make_key("staff")
    assert api_client.get("/api/v1/refund-requests", headers=bearer(key)).status_code == 200
    User.objects.filter(pk=approver.pk).update(is_staff=False)
    assert api_client.get("/api/v1/refund-requests", headers=bearer(key)).status_code == 403


def test_create_api_key_command_prints_the_key_once(api_client, customer_a, approver):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key",
        "helpdesk",
        "--scope",
        "tickets",
        "--customer",
        customer_a.email,
        "--owner",
        approver.username,
        "--expires-days",
        "30",
        stdout=out,
        stderr=err,
    )

    key = out.getvalue().strip()
    assert KEY_SHAPE.match(key)
    assert key not in err.getvalue()
    row = ApiKey.objects.get(prefix=key.split(".")[0])
    assert row.customer_id == customer_a.pk
    assert row.expires_at is not None
    assert row.expires_at > timezone.now() + dt.timedelta(days=29)
    assert _status(api_client, key) == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["k", "--scope", "staff", "--owner", "nobody"], "no user"),
        (["k", "--scope", "tickets", "--customer", "nobody@example.test"], "no customer"),
        (["k", "--scope", "tickets"], "--owner"),
    ],
)
def test_create_api_key_command_fails_loudly(args, message, approver):
    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args, stdout=io.StringIO(), stderr=io.StringIO())


def test_a_staff_key_needs_a_staff_owner(customer_a):
    plain = User.objects.create_user("not-staff", password="x-not-used-x")
    with pytest.raises(CommandError, match="staff"):
        call_command(
            "create_api_key", "k", "--scope", "staff", "--owner", plain.username,
            stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip


@pytest.fixture
def admin_client_(client, transactional_db):
    admin = User.objects.create_superuser("api-admin", "admin@example.test", "x-not-used-x")
    client.force_login(admin)
    return client, admin


def test_admin_creates_a_key_and_shows_it_once(admin_client_, api_client, customer_a):
    client, admin = admin_client_
    response = client.post(
        "/admin/support/apikey/add/",
        {"name": "from admin", "scopes": ["tickets"], "owner": admin.pk, "customer": customer_a.pk},
    )

    assert response.status_code == 200
    key = re.search(r"<code>([0-9a-f]{12}\.[A-Za-z0-9_-]{43})</code>", response.content.decode())
    assert key is not None
    assert "no-store" in response["Cache-Control"]
    assert _status(api_client, key.group(1)) == 200
    listing = client.get("/admin/support/apikey/").content.decode()
    assert key.group(1).split(".")[1] not in listing


def test_admin_rotates_and_revokes(admin_client_, api_client, approver, customer_a, settings):
    settings.API_KEY_ROTATION_GRACE_SECONDS = 3600
    client, _ = admin_client_
    one = api_key_create(name="one", scopes=["tickets"], owner=approver, customer=customer_a)
    two = api_key_create(name="two", scopes=["tickets"], owner=approver, customer=customer_a)

    rotated = client.post(
        "/admin/support/apikey/",
        {"action": "rotate", "_selected_action": [one.api_key.pk]},
    )
    new_key = re.search(r"<code>([^<]+)</code>", rotated.content.decode())
    assert new_key is not None
    assert _status(api_client, new_key.group(1)) == 200
    assert _status(api_client, one.plaintext) == 200  # in its grace period

    client.post(
        "/admin/support/apikey/", {"action": "revoke", "_selected_action": [two.api_key.pk]}
    )
    assert _status(api_client, two.plaintext) == 401
