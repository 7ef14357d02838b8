"""The reply guard against seeded records: claims, amounts, identifiers, dates; and the runner's
regenerate-once-then-replace around it.

The demo world is seeded once for this module (the guard only reads it; each test that writes a
refund request undoes it with `demo_customer_reset`), which keeps the many cases fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from django.utils import timezone

from billing import services as billing_services
from billing.demo import demo_customer_reset
from billing.models import Charge, Customer, RefundRequest, RefundRequestState
from ledgerly.llm import prompt_registry
from ledgerly.llm.models import LLMCall
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from ledgerly.llm.simulator.wire import stream_events
from memory.models import Message, MessageRole, SemanticCacheEntry
from support import guard
from support.models import GuardIntervention, Ticket
from tests.support.conftest import ask

ANA = "ana.lopez@example.com"
CHLOE = "chloe.martin@example.com"
EMMA = "emma.schulz@example.com"
ISLA = "isla.novak@example.com"
JONAS = "jonas.berg@example.com"


@pytest.fixture
def seeded(seeded_world: int) -> int:
    """The demo world, seeded once a module and flushed after it (see tests/support/conftest)."""
    return seeded_world


@pytest.fixture
def world(seeded, redis_client) -> Iterator[None]:
    """Undo what a test did to the demo customers' refunds, so the next starts from the seed."""
    yield
    # Only Ana's refund requests are written here (tickets of the others hold none).
    Ticket.objects.filter(customer__email=ANA).update(refund_request=None)
    demo_customer_reset(email=ANA)


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("world")]


def who(email: str) -> Customer:
    return Customer.objects.get(email=email)


def ana_request(state: str | None) -> RefundRequest | None:
    """Ana's duplicate-charge refund request (49.00 USD) in `state`, or None for no request."""
    if state is None:
        return None
    ana = who(ANA)
    request = billing_services.refund_request_create(
        customer=ana,
        charge=Charge.objects.get(ref="ch_demo_ana_2"),
        proposed_by="test",
        idempotency_key=f"guard-test-{state}",
    )
    RefundRequest.objects.filter(pk=request.pk).update(state=state, decided_at=timezone.now())
    request.refresh_from_db()
    return request


def violations(text: str, email: str = ANA, state: str | None = None) -> list[str]:
    return guard.check(text=text, customer=who(email), refund_request=ana_request(state)).violations


# --- claims -------------------------------------------------------------------------------------
EXECUTED_CLAIMS = [
    "Your refund has been issued.",
    "The refund was processed this morning.",
    "I've refunded the duplicate charge.",
    "We have refunded your payment.",
    "Good news: the money has been returned to your card.",
    # A second clause must not hedge the first one's claim.
    "Your refund has been issued and will be on your card in 5-10 business days.",
    "Your refund has been processed, no further action is needed.",
    "The refund was sent, so if you have questions just ask.",
    "We refunded you already, and you will see it when your bank posts it.",
    "Your refund is on its way to your card.",
    "The money is back on your card.",
    "We've sent the money back to your Visa.",
    "No worries, your refund has been issued.",
    "Your refund of $49.00 has been issued.",  # a decimal point does not end the sentence
    "The refund of 1,990.00 EUR was processed.",
    "If you have questions, just ask; your refund has been issued.",
]
APPROVED_CLAIMS = [
    "Your refund of $49.00 has been approved.",
    "Your refund request has been approved.",
    "I have approved your refund.",
    "The refund was approved by our team.",
    "Your refund request was accepted, you will get an email when the money arrives.",
    "Great news, your refund has been approved and will be sent back to your card.",
]
HEDGED = [
    "Once it is approved, the money goes back to your original payment method.",
    "Before it is issued, a staff member has to approve your refund.",
    "Your refund will be issued once it has been approved.",
    "No refund has been issued yet.",
    "Your refund request is waiting for a staff member's approval.",
    "The refund has not been approved yet; staff decide within 1 business day.",
    "If your refund is approved, it takes 5-10 business days to appear.",
    "Your refund request needs to be approved by our team before anything is sent.",
    "Once approved, your refund is on its way within 5-10 business days.",
    "If staff approve it, the money is back on your card within 5-10 business days.",
]


@pytest.mark.parametrize("text", EXECUTED_CLAIMS)
@pytest.mark.parametrize(
    "state",
    [None, RefundRequestState.PROPOSED, RefundRequestState.APPROVED, RefundRequestState.REJECTED],
)
def test_a_refund_claimed_as_issued_before_it_was_executed_is_refused(text, state):
    assert any("claims a refund was issued" in v for v in violations(text, state=state))


@pytest.mark.parametrize("text", EXECUTED_CLAIMS)
def test_a_refund_claimed_as_issued_after_it_was_executed_passes(text):
    assert violations(text, state=RefundRequestState.EXECUTED) == []


@pytest.mark.parametrize("text", APPROVED_CLAIMS)
@pytest.mark.parametrize("state", [None, RefundRequestState.PROPOSED, RefundRequestState.REJECTED])
def test_a_refund_claimed_as_approved_while_undecided_or_absent_is_refused(text, state):
    assert any("claims a refund was approved" in v for v in violations(text, state=state))


@pytest.mark.parametrize("text", APPROVED_CLAIMS)
@pytest.mark.parametrize("state", [RefundRequestState.APPROVED, RefundRequestState.EXECUTED])
def test_a_refund_claimed_as_approved_once_it_is_passes(text, state):
    assert violations(text, state=state) == []


@pytest.mark.parametrize("text", HEDGED)
@pytest.mark.parametrize("state", [None, RefundRequestState.PROPOSED])
def test_hedged_sentences_about_what_happens_next_pass(text, state):
    assert violations(text, state=state) == []


@pytest.mark.parametrize(
    "text",
    [
        "Ihre Rückerstattung wurde bereits ausgezahlt.",
        "Tu reembolso ha sido procesado.",
        "Votre remboursement a été effectué.",
        "Ihre Erstattung wurde genehmigt.",
        "Su reembolso ha sido aprobado.",
        "Votre remboursement a été approuvé.",
    ],
)
def test_claims_in_the_customers_language_are_checked_too(text):
    assert any(
        "claims a refund was" in v for v in violations(text, state=RefundRequestState.PROPOSED)
    )


# --- amounts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("email", "text"),
    [
        (CHLOE, "Your annual charge of €1,990.00 is refundable in full."),
        (CHLOE, "Votre paiement de 1 990,00 € peut être remboursé."),
        (CHLOE, "Ihre Zahlung von 1.990,00 € wird erstattet."),
        (CHLOE, "Su pago de €1.990,00 puede ser reembolsado."),
        (CHLOE, "The charge was EUR 1,990.00."),
        (CHLOE, "The charge was 1990.00 EUR."),
        (JONAS, "Ihre Rechnung über 58,31 € wurde bezahlt."),
        (JONAS, "Your invoice of €58.31 includes VAT of €9.31."),
        (ANA, "The Growth plan costs $49 a month, or $490 a year."),
        (ANA, "Duplicate charges of $25.00 or less are approved automatically."),
    ],
)
def test_amounts_from_the_records_or_the_price_list_pass_in_any_format(email, text):
    assert violations(text, email=email) == []


@pytest.mark.parametrize(
    ("email", "text"),
    [
        (CHLOE, "We will refund €5.000,00 to your card."),
        (CHLOE, "Nous vous remboursons 5.000,00 €."),
        (CHLOE, "Nous vous remboursons 5 000,00 €."),
        (CHLOE, "We will refund EUR 5000 to your card."),
        (CHLOE, "Wir erstatten 1.049,00 EUR."),
        (CHLOE, "We will refund 1,049.00 EUR."),
        (JONAS, "Your invoice of $58.31 was paid."),  # Jonas pays in EUR
        (JONAS, "Your invoice of £58.31 was paid."),
        (ANA, "We can refund $4,900.00 to you."),
        (ANA, "We can refund $12.34 to you."),
    ],
)
def test_amounts_or_currencies_not_in_the_records_are_refused(email, text):
    assert any("an amount not in the records" in v for v in violations(text, email=email))


def test_the_amount_of_the_tickets_refund_request_passes():
    assert (
        violations("Your refund request for $49.00 is waiting for approval.", state="proposed")
        == []
    )


# --- identifiers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "identifier",
    [
        "ana.lopez@example.com",
        "ch_demo_ana_2",
        "INV-DEMO-ANA-01",
        "cus_demo_ana",
        "sub_demo_ana",
        "re_demo_isla_1",
        "ch_bg_001_01",
        "cus_bg_001",
        "inv-demo-ana-01",  # references are matched whatever their case
        "CH_DEMO_ANA_2",
        "ANA.LOPEZ@EXAMPLE.COM",
    ],
)
def test_another_customers_email_or_reference_is_refused(identifier):
    found = violations(f"Here you go: {identifier} is on record.", email=EMMA)
    assert any("not the customer's" in v for v in found)


@pytest.mark.parametrize(
    ("email", "identifier"),
    [
        (EMMA, "emma.schulz@example.com"),
        (EMMA, "ch_demo_emma_1"),
        (EMMA, "INV-DEMO-EMMA-01"),
        (EMMA, "cus_demo_emma"),
        (EMMA, "sub_demo_emma"),
        (EMMA, "support@ledgerly.example"),
        (EMMA, "inv-demo-emma-01"),
        (ISLA, "re_demo_isla_1"),  # Isla's own earlier refund (seeded history)
    ],
)
def test_the_customers_own_identifiers_pass(email, identifier):
    assert violations(f"Here you go: {identifier} is on record.", email=email) == []


# --- dates and time frames ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "Your refund will arrive by Friday.",
        "You will receive the money within 24 hours.",
        "Your refund will be back in 24 hours.",
        "Staff will decide on your refund tomorrow.",
        "The money will appear on your card by the end of the week.",
        "Your refund will be reviewed within 2 hours.",
        "Your refund will appear in 4 business days.",
        "The refund is credited within 21 days.",
        "Your refund will arrive next week.",
        "Your refund will arrive on 5 December.",
        "The money will be back by the 15th of December.",
        "You will receive the refund by 15/12.",
        "You will get the money back on Monday.",
        "Ihre Erstattung kommt bis Freitag an.",
        "Recibirás el reembolso mañana.",
        "Vous recevrez le remboursement demain.",
    ],
)
def test_dates_and_time_frames_the_policy_does_not_give_are_refused(text):
    found = violations(text, state=RefundRequestState.PROPOSED)
    assert any("promises a date" in v or "time frame" in v for v in found)


@pytest.mark.parametrize(
    "text",
    [
        "Refunds take 5-10 business days to appear on your statement.",
        "Refunds take 5–10 business days to appear.",
        "Monthly plans are refunded in full within 14 days of the charge.",
        "Annual plans are refunded in full within 30 days.",
        "Staff decide refund requests within 1 business day.",
        "Duplicate charges are refunded within 180 days.",
        "A failed payment is retried on days 1, 3 and 7.",
        "Your data is kept for 90 days after cancellation.",
    ],
)
def test_time_frames_the_policy_gives_pass(text):
    assert violations(text, state=RefundRequestState.PROPOSED) == []


# --- instructions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["agent_system", "faq_answer", "route_ticket"])
def test_a_reply_quoting_the_models_instructions_is_refused(name):
    text = f"Sure. My instructions are: {prompt_registry.get(name).text[:400]}"
    assert "quotes the assistant's instructions" in violations(text)


def test_a_reply_mentioning_the_help_center_in_its_own_words_passes():
    text = "I answer from our help-center articles, and I can pass this to a human on our team."
    assert violations(text) == []


# --- the runner around the guard ----------------------------------------------------------------
CLAIM = "Your refund has been issued to your card"


class ScriptedFaqModel(httpx2.BaseTransport):
    """The FAQ model writes a false claim with a valid citation; the redraft model writes
    `redraft` (a claim again, or a clean answer); everything else is the simulator."""

    def __init__(self, redraft: str) -> None:
        self.redraft = redraft
        self.inner = SimulatorTransport(SimulatorConfig(retry_after_s=0.01))

    def _answer(self, body: dict[str, Any]) -> str | None:
        system = json.dumps(body.get("system"))
        content = json.dumps(body.get("messages"))
        if "You fix a draft reply" in system:
            return self.redraft
        if "Answer only from the help-center documents" in system:
            slug = content.split("<source>", 1)[1].split("</source>", 1)[0]
            return f"{CLAIM} [{slug}]."
        return None

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != "/v1/messages":
            return self.inner.handle_request(request)
        body = json.loads(request.read())
        text = self._answer(body)
        if text is None:
            return self.inner.handle_request(request)
        message = {
            "id": "msg_scripted",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 200,
                "output_tokens": 20,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if body.get("stream"):  # the FAQ lane streams its draft to the chat
            return httpx2.Response(
                200,
                content=b"".join(stream_events(message)),
                headers={"content-type": "text/event-stream"},
                request=request,
            )
        return httpx2.Response(200, json=message, request=request)


@pytest.fixture
def faq_model(sim_gateway) -> Callable[[str], None]:
    def install(redraft: str) -> None:
        sim_gateway(transport=ScriptedFaqModel(redraft))

    return install


def test_a_false_claim_is_regenerated_once_then_replaced_and_recorded(faq_model):
    faq_model(f"{CLAIM}.")
    ticket = ask(EMMA, "How long does a refund take to show up on my card?")

    interventions = list(GuardIntervention.objects.filter(ticket=ticket).order_by("pk"))
    assert [(i.lane, i.action) for i in interventions] == [
        ("faq", "regenerated"),
        ("faq", "replaced"),
    ]
    assert all("claims a refund was issued" in " ".join(i.violations) for i in interventions)
    assert interventions[0].draft.startswith(CLAIM)
    assert ticket.reply == guard.safe_reply(refund_request=None)
    assert "issued" not in ticket.reply
    assert LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="reply_redraft").count() == 1
    replies = Message.objects.filter(conversation=ticket.conversation, role=MessageRole.ASSISTANT)
    assert list(replies.values_list("content", flat=True)) == [ticket.reply]


def test_a_clean_redraft_is_sent_instead_of_the_false_claim(faq_model):
    clean = "Refunds go back to your original payment method within 5-10 business days."
    faq_model(clean)
    ticket = ask(EMMA, "How long does a refund take to show up on my card?")

    assert list(
        GuardIntervention.objects.filter(ticket=ticket).values_list("action", flat=True)
    ) == ["regenerated"]
    assert ticket.reply == clean
    assert LLMCall.objects.filter(ticket_id=str(ticket.pk), purpose="reply_redraft").count() == 1


def test_a_draft_the_guard_replaced_is_not_cached_for_the_next_customer(faq_model, settings):
    settings.SUPPORT_SEMANTIC_CACHE = True
    question = "How long do refunds take to reach a credit card?"
    faq_model(f"{CLAIM}.")
    ask(EMMA, question)
    # The draft the guard refused was not kept for anyone.
    assert not SemanticCacheEntry.objects.filter(answer__icontains="has been issued").exists()
    faq_model("Refunds take 5-10 business days to appear.")

    second = ask(JONAS, question)

    assert CLAIM not in second.reply
    assert second.reply == "Refunds take 5-10 business days to appear."
