"""A kill switch pulled on the staff page stops new agent work: the next ticket goes to staff
with the holding reply and no model call is made (the runner checks the switch first)."""

from __future__ import annotations

import pytest

from billing.models import RefundRequest
from ledgerly.llm.models import LLMCall
from support import services
from support.models import Escalation, TicketState
from tests.billing import factories as billing_factories
from tests.support.conftest import drive, sim_gateway  # noqa: F401 — the fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sim_gateway")]


@pytest.mark.parametrize("scope", ["global", "customer"])
def test_a_switch_pulled_on_the_page_stops_new_runs(viewer_client, scope):
    who = billing_factories.customer()
    form = {"scope": scope, "customer": who.email, "enabled": "on", "reason": "incident 42"}
    assert viewer_client.post("/staff/kill-switches/set", form).status_code == 302

    ticket = drive(services.ticket_submit(customer=who, text="Please refund my last charge"))

    assert ticket.state == TicketState.ESCALATED
    assert Escalation.objects.get(ticket=ticket).reason == "kill_switch"
    assert "paused" in ticket.reply
    assert not LLMCall.objects.filter(ticket_id=str(ticket.pk)).exists()
    assert not RefundRequest.objects.filter(customer=who).exists()
