from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.staff import factories


@pytest.fixture
def approver(db) -> User:
    return factories.staff_user(approver=True, username="approver")


@pytest.fixture
def viewer(db) -> User:
    """Staff without the refund-approver permission."""
    return factories.staff_user(approver=False, username="viewer")


def signed_in(user: User) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


@pytest.fixture
def approver_client(approver) -> Client:
    return signed_in(approver)


@pytest.fixture
def viewer_client(viewer) -> Client:
    return signed_in(viewer)
