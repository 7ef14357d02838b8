from __future__ import annotations

import datetime as dt

import pytest

from billing import services
from tests.billing import factories

pytestmark = pytest.mark.django_db

ISSUED = dt.datetime(2026, 1, 10, 9, tzinfo=dt.UTC)


@pytest.mark.parametrize("days", [0, 89, 90])
def test_invoices_from_the_last_90_days_can_be_reissued(days):
    charge = factories.charge(charged_at=ISSUED)
    at = ISSUED + dt.timedelta(days=days, hours=14)  # late on day `days`

    invoice = services.invoice_reissue(customer=charge.customer, invoice=charge.invoice, at=at)

    assert (invoice.reissued, invoice.reissued_at) == (True, at)


@pytest.mark.parametrize("days", [91, 400])
def test_older_invoices_cannot_be_reissued(days):
    charge = factories.charge(charged_at=ISSUED)
    at = ISSUED + dt.timedelta(days=days)

    with pytest.raises(services.InvoiceReissueNotAllowed, match="last 90 days"):
        services.invoice_reissue(customer=charge.customer, invoice=charge.invoice, at=at)

    charge.invoice.refresh_from_db()
    assert charge.invoice.reissued is False


def test_an_invoice_is_reissued_only_once():
    charge = factories.charge(charged_at=ISSUED)
    services.invoice_reissue(customer=charge.customer, invoice=charge.invoice, at=ISSUED)

    with pytest.raises(services.InvoiceReissueNotAllowed, match="already"):
        services.invoice_reissue(customer=charge.customer, invoice=charge.invoice, at=ISSUED)


def test_another_customers_invoice_is_refused():
    charge = factories.charge(charged_at=ISSUED)

    with pytest.raises(services.InvoiceReissueNotAllowed, match="does not belong"):
        services.invoice_reissue(customer=factories.customer(), invoice=charge.invoice, at=ISSUED)
