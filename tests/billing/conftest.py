from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from billing import services
from billing.models import Charge, RefundRequest
from billing.processor.simulator import SimulatedProcessor
from tests.billing import factories


@pytest.fixture
def processor() -> Iterator[SimulatedProcessor]:
    """The processor simulator (shared Redis ledger), emptied before and after the test."""
    simulator = SimulatedProcessor()
    simulator.reset()
    yield simulator
    simulator.reset()


@pytest.fixture
def staff_user(db: None) -> User:
    user = User.objects.create_user("approver", password="x-not-used-x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_refundrequest"))
    return User.objects.get(pk=user.pk)  # fresh instance: permission cache empty


@pytest.fixture
def make_approved_request(
    staff_user: User,
) -> Callable[..., RefundRequest]:
    """Build a charge (or use one) and a staff-approved refund request for it."""

    def build(
        *, charge: Charge | None = None, amount: Decimal | None = None, key: str | None = None
    ) -> RefundRequest:
        charge = charge or factories.charge(charged_at=timezone.now() - dt.timedelta(days=2))
        request = services.refund_request_create(
            customer=charge.customer,
            charge=charge,
            amount=amount,
            proposed_by="test",
            idempotency_key=key,
        )
        return services.refund_request_approve(refund_request=request, actor=staff_user)

    return build
