"""Sign-in to the customer chat: the demo list, the magic link (round trip, single use,
expiry), sign-out, and who may sign in at all."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import User
from django.core import mail, signing

from billing.demo import SCENARIO_EMAILS
from billing.models import Customer
from support import signin

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("demo_world")]

LINK = re.compile(r"http://testserver(/signin/link/[^/\s]+/)")


def _link_for(client, email: str) -> str:
    mail.outbox.clear()
    client.post("/signin/", {"email": email})
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [email]
    found = LINK.search(str(mail.outbox[0].body))
    assert found is not None
    return found.group(1)


def test_the_demo_sign_in_lists_the_scenario_customers_in_order(client):
    body = client.get("/signin/").content.decode()

    listed = re.findall(r'data-testid="demo-signin" data-email="([^"]+)"', body)
    assert listed == list(SCENARIO_EMAILS)


def test_a_demo_customer_signs_in_and_sees_their_chat(client):
    response = client.post("/signin/demo/", {"email": "ana.lopez@example.com"})

    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert "Signed in as Ana" in home.content.decode()


@pytest.mark.parametrize("email", ["staff", "someone@example.com", ""])
def test_the_demo_sign_in_refuses_anyone_else(client, email):
    response = client.post("/signin/demo/", {"email": email})

    assert response.status_code == 400
    assert client.get("/").status_code == 302  # still signed out


def test_the_demo_sign_in_is_gone_when_disabled(client, settings):
    settings.DEMO_SIGNIN_ENABLED = False

    assert client.post("/signin/demo/", {"email": "ana.lopez@example.com"}).status_code == 404
    assert 'data-testid="demo-signin"' not in client.get("/signin/").content.decode()


def test_a_magic_link_round_trip_signs_the_customer_in_once(client):
    path = _link_for(client, "ben.okafor@example.com")

    confirm = client.get(path)  # a mail scanner's GET does not sign in or use the link
    assert confirm.status_code == 200
    assert client.get("/").status_code == 302
    assert client.post(path).status_code == 302
    assert "Signed in as Ben" in client.get("/").content.decode()

    client.post("/signout/")
    again = client.post(path)
    assert again.status_code == 400
    assert "already been used" in again.content.decode()
    assert client.get("/").status_code == 302


def test_an_expired_magic_link_is_refused(client, monkeypatch):
    path = _link_for(client, "chloe.martin@example.com")
    later = time.time() + signin.MAGIC_LINK_MAX_AGE + 5
    monkeypatch.setattr(signing.time, "time", lambda: later)  # type: ignore[attr-defined]

    response = client.post(path)

    assert response.status_code == 400
    assert "expired" in response.content.decode()
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("token", ["nonsense", "eyJ1IjoxfQ:1abc:forged"])
def test_a_forged_magic_link_is_refused(client, token):
    assert client.post(f"/signin/link/{token}/").status_code == 400


def test_no_mail_for_an_address_without_a_customer_and_the_same_answer(client):
    User.objects.create_user("staffer", email="staffer@example.com", password="x")
    mail.outbox.clear()

    unknown = client.post("/signin/", {"email": "nobody@example.com"})
    staff = client.post("/signin/", {"email": "staffer@example.com"})

    assert mail.outbox == []
    assert unknown.status_code == staff.status_code == 200
    assert 'data-testid="signin-sent"' in unknown.content.decode()


def test_a_customer_whose_login_was_unlinked_cannot_use_a_link(client):
    path = _link_for(client, "dev.patel@example.com")
    Customer.objects.filter(email="dev.patel@example.com").update(user=None)

    assert client.post(path).status_code == 400


def test_staff_without_a_customer_are_sent_to_sign_in(client):
    User.objects.create_user("staffer", password="x", is_staff=True)
    client.login(username="staffer", password="x")

    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/signin/")


def test_asking_again_within_a_minute_sends_no_second_mail(client):
    mail.outbox.clear()

    for _ in range(3):
        assert client.post("/signin/", {"email": "isla.novak@example.com"}).status_code == 200

    assert len(mail.outbox) == 1
