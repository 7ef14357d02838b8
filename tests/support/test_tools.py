"""The agent's tools: scoped to the ticket's customer, schema-checked, versioned, cached safely."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing import services as billing_services
from billing.models import Customer, RefundRequest
from support import tool_schemas, tools

pytestmark = pytest.mark.usefixtures("demo_world")


def scope(email: str) -> tools.ToolScope:
    return tools.ToolScope(customer=Customer.objects.get(email=email), ticket_id=1, run_id=1)


def test_the_tool_schemas_are_locked_at_their_version():
    assert tool_schemas.check_lock() is None


def test_no_tool_takes_a_customer_argument():
    for definition in tool_schemas.DEFINITIONS:
        properties = definition["input_schema"].get("properties", {})
        assert not any("customer" in name or "email" in name for name in properties)


def test_lookups_see_only_the_tickets_customer():
    result = tools.run_tool(scope("emma.schulz@example.com"), "list_charges", {})
    assert {c["ref"] for c in result["charges"]} == {"ch_demo_emma_1"}


def test_propose_refund_of_another_customers_charge_is_an_error_result():
    with pytest.raises(tools.ToolError):
        tools.run_tool(
            scope("emma.schulz@example.com"),
            "propose_refund",
            {"charge_ref": "ch_demo_ana_2", "reason": "x", "confidence": 1, "uncertainty": ""},
        )
    assert not RefundRequest.objects.exists()


def test_a_models_amount_above_the_policy_is_capped_at_the_policys():
    result = tools.run_tool(
        scope("dev.patel@example.com"),
        "propose_refund",
        {
            "charge_ref": "ch_demo_dev_1",
            "amount": "490.00",
            "reason": "unused",
            "confidence": 0.9,
            "uncertainty": "none",
        },
    )
    assert result["amount"] == "326.67"
    assert RefundRequest.objects.get().amount == Decimal("326.67")


def test_a_result_breaking_its_schema_is_refused(monkeypatch):
    monkeypatch.setitem(tools.IMPLEMENTATIONS, "list_invoices", lambda s, a: {"invoices": [{}]})
    with pytest.raises(tools.ToolResultInvalid):
        tools.run_tool(scope("ana.lopez@example.com"), "list_invoices", {})


def test_invalid_tool_input_is_an_error_for_the_model():
    with pytest.raises(tools.ToolError):
        tools.run_tool(scope("ana.lopez@example.com"), "list_charges", {"invoice_number": 7})


def test_cached_lookups_see_a_billing_write_at_once(redis_client, settings):
    settings.SUPPORT_LOOKUP_CACHE_SECONDS = 60
    ana = scope("ana.lopez@example.com")
    before = tools.run_tool(ana, "list_charges", {})
    assert tools.run_tool(ana, "list_charges", {}) == before  # served from the cache
    charge = ana.customer.charges.get(ref="ch_demo_ana_1")
    charge.refunded_amount = Decimal("1.00")  # stands for any write billing makes, then:
    charge.save(update_fields=["refunded_amount"])
    billing_services.billing_version_bump(customer_id=ana.customer.pk)  # after commit
    after = tools.run_tool(ana, "list_charges", {})
    refunded = {c["ref"]: c["refunded_amount"] for c in after["charges"]}
    assert refunded["ch_demo_ana_1"] == "1.00"
