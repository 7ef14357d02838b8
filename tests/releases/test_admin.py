"""Staff roll a release back (or promote one) from the admin; the action is audited."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from support import releases
from support.models import AuditEntry, ReleaseState

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_releases")]


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("maria", "maria@example.com", "pw-not-used")
    client.force_login(user)
    return client


def test_rolling_back_from_the_admin_records_who_and_stops_assignment(staff_client, candidate):
    canary = candidate("canary", share="1")
    page = staff_client.get(f"/admin/support/release/{canary.pk}/change/")
    assert page.status_code == 200
    assert b"fewer than the minimum" in page.content

    response = staff_client.post(
        "/admin/support/release/", {"action": "rollback", "_selected_action": [canary.pk]}
    )

    assert response.status_code == 302
    canary.refresh_from_db()
    assert (canary.state, canary.rolled_back_by) == (ReleaseState.ROLLED_BACK, "staff:maria")
    assert AuditEntry.objects.filter(
        action="release.rollback", target=f"release:{canary.name}", actor__username="maria"
    ).exists()
    assert releases.release_for_customer(customer_ref="cus_x").name == "r1"


def test_promoting_from_the_admin(staff_client, candidate):
    canary = candidate("canary", share="0.1")
    staff_client.post(
        "/admin/support/release/", {"action": "promote", "_selected_action": [canary.pk]}
    )
    assert releases.release_current() == canary
    assert AuditEntry.objects.filter(action="release.promote").count() == 1
