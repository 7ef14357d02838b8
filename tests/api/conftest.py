from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from billing.models import Customer
from support.apikeys import api_key_create
from tests.billing import factories


@pytest.fixture
def api_client() -> Client:
    return Client()


@pytest.fixture
def customer_a(transactional_db) -> Customer:
    return factories.customer()


@pytest.fixture
def customer_b(transactional_db) -> Customer:
    return factories.customer()


@pytest.fixture
def approver(transactional_db) -> User:
    """Staff with the refund-approver permission."""
    user = User.objects.create_user("api-approver", password="x-not-used-x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_refundrequest"))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def plain_staff(transactional_db) -> User:
    """Staff without the refund-approver permission."""
    return User.objects.create_user("api-staff", password="x-not-used-x", is_staff=True)


@pytest.fixture
def make_key(approver) -> Callable[..., str]:
    """A key's plaintext: `make_key("tickets", customer=...)`, `make_key("staff")`."""

    def make(*scopes: str, owner: User | None = None, **kwargs: Any) -> str:
        issued = api_key_create(
            name="test key", scopes=list(scopes), owner=owner or approver, **kwargs
        )
        return issued.plaintext

    return make


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_json(client: Client, path: str, body: Any, key: str, **headers: str) -> Any:
    return client.post(
        path, body, content_type="application/json", headers={**bearer(key), **headers}
    )


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "detail"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]["code"]
