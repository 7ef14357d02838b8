from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command

from billing import demo
from billing.models import Charge, Customer, Invoice, Refund, Subscription

TODAY = dt.date(2026, 11, 21)


def _counts() -> dict[str, int]:
    return {
        "customers": Customer.objects.count(),
        "subscriptions": Subscription.objects.count(),
        "invoices": Invoice.objects.count(),
        "charges": Charge.objects.count(),
        "refunds": Refund.objects.count(),
        "users": User.objects.count(),
    }


@pytest.mark.django_db
def test_seed_twice_creates_nothing_new():
    call_command("seed_demo", "--today", TODAY.isoformat(), stdout=StringIO())
    first = _counts()
    call_command("seed_demo", "--today", TODAY.isoformat(), stdout=StringIO())
    assert _counts() == first


@pytest.mark.django_db
def test_seed_on_a_later_day_moves_dates_without_duplicates():
    demo.seed_demo(today=TODAY)
    first = _counts()
    demo.seed_demo(today=TODAY + dt.timedelta(days=9))
    assert _counts() == first
    ana = Charge.objects.get(ref=demo.ANA_DUPLICATE_CHARGE)
    assert ana.charged_at.date() == TODAY + dt.timedelta(days=9 - 3)


@pytest.mark.django_db
def test_seed_is_deterministic_for_a_date():
    demo.seed_demo(today=TODAY)
    snapshot = list(Charge.objects.order_by("ref").values_list("ref", "amount", "charged_at"))
    Refund.objects.all().delete()
    Charge.objects.all().delete()
    demo.seed_demo(today=TODAY)
    assert list(Charge.objects.order_by("ref").values_list("ref", "amount", "charged_at")) == (
        snapshot
    )


@pytest.mark.django_db
def test_seed_has_ten_scenario_customers_and_at_least_forty_with_a_year_of_history():
    demo.seed_demo(today=TODAY)
    assert set(
        Customer.objects.filter(email__in=demo.SCENARIO_EMAILS).values_list("email", flat=True)
    ) == set(demo.SCENARIO_EMAILS)
    background = Customer.objects.filter(ref__startswith="cus_bg_")
    assert background.count() >= 40
    oldest = Charge.objects.filter(customer__in=background).order_by("charged_at").first()
    assert oldest is not None
    assert oldest.charged_at.date() <= TODAY - dt.timedelta(days=330)


@pytest.mark.django_db
def test_every_demo_customer_has_a_passwordless_user_and_staff_can_sign_in():
    demo.seed_demo(today=TODAY)
    users = User.objects.filter(username__in=Customer.objects.values("email"))
    assert users.count() == Customer.objects.count()
    assert not any(user.has_usable_password() for user in users)
    staff = authenticate(username=demo.STAFF_USERNAME, password=demo.STAFF_PASSWORD)
    assert staff is not None
    assert staff.is_staff
    assert staff.has_perm("billing.decide_refundrequest")
    assert staff.has_perm("billing.view_charge")


@pytest.mark.django_db
def test_jonas_is_charged_49_plus_19_percent_vat():
    demo.seed_demo(today=TODAY)
    invoice = Invoice.objects.get(number=demo.JONAS_INVOICE)
    assert (str(invoice.subtotal), str(invoice.tax), str(invoice.total)) == (
        "49.00",
        "9.31",
        "58.31",
    )
    assert Charge.objects.get(ref=demo.JONAS_CHARGE).amount == invoice.total
