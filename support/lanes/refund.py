"""The refund workflow: fixed steps in code, no free-form loop.

identify the charge (the signed-in customer's own, never one named for someone else) → apply
`billing.policy` to fresh rows → create the RefundRequest (idempotent per ticket and charge) or
explain, citing the clause, why not → say what happens next and when.

The amount always comes from the ledger through the policy; nothing the model or the customer
writes sets it. The small model is used only to tell which of the customer's invoices a message
means when plain matching cannot, and its answer must name one of them.

Conversation repair: while the workflow holds the conversation, the customer may correct the
charge ("no, the other invoice"), cancel ("never mind": an undecided request is withdrawn),
digress (an FAQ question is answered, then the flow goes on) or ask for a human (handled before
any lane, by the runner).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from django.utils import timezone

from billing import policy
from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import Charge, ChargeStatus, RefundRequest, RefundRequestState
from support import router
from support.lanes import faq
from support.steps import EscalationDraft, Reply, StepEnv, StepOutcome

_CANCEL = re.compile(
    r"\b(never ?mind|nevermind|forget (?:it|about it)|cancel (?:the|my|that) (?:refund|request)|"
    r"don'?t (?:want|need) (?:the |a )?refund|no longer (?:want|need)|"
    r"keep (?:it|the money|my plan)|"
    r"withdraw|changed my mind|olvídalo|olvidalo|ya no|vergiss es|doch nicht|laisse tomber|"
    r"plus besoin|deixa pra lá|esquece|annul\w* (?:la|ma|cette) demande|on (?:le|la) garde|"
    r"finalement non|cancel(?:ar)? (?:la|mi|the|my) (?:solicitud|request)|anula\w*|"
    r"stornier\w*|zurückzieh\w*|behalten|lo mantengo|me lo quedo)\b",
    re.I,
)
_WHY = re.compile(
    r"\b(why|how come|only|porque|por qué|warum|wieso|pourquoi|perché|por que)\b", re.I
)
_PARTIAL = re.compile(
    r"\b(just|only|solo|nur|seulement|apenas|solamente|partial|part of it)\b", re.I
)
_CORRECT = re.compile(
    r"\b(the other (?:one|invoice|charge|payment)|wrong (?:one|invoice|charge)|not (?:that|this) "
    r"(?:one|invoice|charge)|a different (?:one|invoice|charge)|another (?:invoice|charge)|"
    r"i meant|i mean the|la otra|die andere|l'autre|a outra)\b",
    re.I,
)
_THANKS = re.compile(
    r"^\W*(thanks|thank you|thx|ty|ok|okay|great|cool|perfect|got it|gracias|danke|merci|"
    r"obrigad[oa])\b[\w\s!.,]{0,30}$",
    re.I,
)
_INVOICE = re.compile(r"\bINV-[A-Za-z0-9-]+\b", re.I)
_CHARGE = re.compile(r"\bch_[A-Za-z0-9_]+\b", re.I)
_SPECIFIC = re.compile(
    r"\b(january|february|march|april|may|june|july|august|september|october|november|december|"
    r"last month|previous|earlier|older|first|second|annual|yearly|monthly)\b",
    re.I,
)
RECENT_DAYS = 400  # charges older than this are never what a refund ticket is about

PICK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": ["string", "null"]},
        "reason": {"type": "string"},
    },
    "required": ["invoice_number", "reason"],
    "additionalProperties": False,
}


def money(amount: object, currency: str) -> str:
    return policy.format_money(Decimal(str(amount)), currency)


# --- identifying the charge ------------------------------------------------------------------
def _candidates(env: StepEnv, excluded: list[str]) -> list[Charge]:
    since = timezone.now() - dt.timedelta(days=RECENT_DAYS)
    return [
        c
        for c in billing_selectors.charges_for_customer(customer=env.customer)
        .select_related("invoice")
        .filter(charged_at__gte=since)
        .order_by("-charged_at", "-id")
        if c.ref not in excluded
    ]


def _duplicate_of_pair(charges: list[Charge]) -> Charge | None:
    """The later charge of a same-invoice, same-amount pair of succeeded charges (the policy's
    own test decides; this only picks which charge to ask it about)."""
    now = timezone.now()
    for charge in charges:
        if charge.status != ChargeStatus.SUCCEEDED:
            continue
        decision = policy.evaluate_refund(charge=charge, at=now)
        if decision.clause == policy.CLAUSE_DUPLICATE:
            return charge
    return None


def _named(env: StepEnv, text: str, charges: list[Charge]) -> tuple[Charge | None, bool]:
    """(the charge the text names, whether it names a reference at all)."""
    refs = {m.lower() for m in _CHARGE.findall(text)}
    numbers = {m.upper() for m in _INVOICE.findall(text)}
    if not refs and not numbers:
        return None, False
    for charge in charges:
        if charge.ref.lower() in refs:
            return charge, True
    matching = [c for c in charges if c.invoice.number.upper() in numbers]
    # An invoice paid twice: the duplicate is the one to refund.
    return (_duplicate_of_pair(matching) or (matching[0] if matching else None)), True


def _by_amount(text: str, charges: list[Charge]) -> list[Charge]:
    from support.guard import amounts_in

    said = {amount for amount, _ in amounts_in(text)}
    return [c for c in charges if c.amount in said]


def _pick_with_model(env: StepEnv, text: str, charges: list[Charge]) -> Charge | None:
    listing = "\n".join(
        f"- {c.invoice.number}: {money(c.amount, c.currency)} charged "
        f"{c.charged_at.date().isoformat()} ({c.status})"
        for c in charges[:12]
    )
    completion = env.complete(
        tier="small",
        purpose="refund_pick_invoice",
        prompt="refund_pick_invoice",
        messages=[
            {
                "role": "user",
                "content": (
                    f"<invoices>\n{listing}\n</invoices>\n<message>\n{text[:2000]}\n</message>"
                ),
            }
        ],
        max_tokens=150,
        output_schema=PICK_SCHEMA,
        fallback="none",
    )
    number = str((completion.data or {}).get("invoice_number") or "").upper()
    matching = [c for c in charges if c.invoice.number.upper() == number]
    return _duplicate_of_pair(matching) or (matching[0] if matching else None)


def identify(env: StepEnv, text: str, excluded: list[str]) -> tuple[Charge | None, str]:
    """The charge `text` is about, or None with why ("not_found", "ambiguous", "none")."""
    charges = _candidates(env, excluded)
    if not charges:
        return None, "none"
    named, names_ref = _named(env, text, charges)
    if named is not None:
        return named, "named"
    if names_ref:
        return None, "not_found"
    priced = _by_amount(text, charges)
    if len(priced) == 1:
        return priced[0], "amount"
    pool = priced or charges
    duplicate = _duplicate_of_pair(pool)
    if duplicate is not None:
        return duplicate, "duplicate"
    if len(pool) == 1:
        return pool[0], "only"
    if _SPECIFIC.search(text) or excluded:
        picked = _pick_with_model(env, text, pool)
        if picked is not None:
            return picked, "model"
        return None, "ambiguous"
    return pool[0], "latest"


# --- replies ---------------------------------------------------------------------------------
def _listing(charges: list[Charge]) -> str:
    return "; ".join(
        f"{c.invoice.number} ({money(c.amount, c.currency)}, {c.charged_at.date().isoformat()})"
        for c in charges[:6]
    )


def _requested_text(request: RefundRequest, charge: Charge) -> str:
    amount = money(request.amount, request.currency)
    if request.auto_approved:
        return (
            f"Good news: the refund of {amount} for invoice {charge.invoice.number} qualifies "
            "for automatic approval (a duplicate charge of $25 or less), and it has been approved. "
            "It goes back to your original payment method and takes 5-10 business days to appear."
        )
    return (
        f"I've asked for a refund of {amount} for invoice {charge.invoice.number}. "
        f"{_clause_sentence(request)} Every refund like this needs a staff member's approval; "
        "our team decides within 1 business day, and once it is approved the money goes back "
        "to your original payment method within 5-10 business days. I'll let you know here."
    )


def _clause_sentence(request: RefundRequest) -> str:
    return {
        policy.CLAUSE_DUPLICATE: "Duplicate charges are refunded in full within 180 days.",
        policy.CLAUSE_MONTHLY_14_DAYS: (
            "Monthly plans are refunded in full within 14 days of the charge."
        ),
        policy.CLAUSE_ANNUAL_30_DAYS: (
            "Annual plans are refunded in full within 30 days of the charge."
        ),
        policy.CLAUSE_ANNUAL_PRORATED: (
            "After 30 days, an annual plan is refunded for the unused whole months if you ask "
            "within 6 months of the charge."
        ),
    }.get(request.clause, "")


def status_text(request: RefundRequest) -> str:
    """Where the request stands, from its row (for replies of every lane)."""
    request.refresh_from_db()
    amount = money(request.amount, request.currency)
    return {
        RefundRequestState.PROPOSED: f"Your refund request for {amount} is waiting for a staff "
        "member's approval (staff decide within 1 business day).",
        RefundRequestState.APPROVED: f"Your refund of {amount} has been approved and is being "
        "processed.",
        RefundRequestState.EXECUTED: f"Your refund of {amount} has been sent back to your "
        "original payment method; it takes 5-10 business days to appear.",
        RefundRequestState.REJECTED: f"Your refund request for {amount} was not approved.",
        RefundRequestState.WITHDRAWN: f"Your refund request for {amount} was withdrawn.",
    }.get(RefundRequestState(request.state), f"Your refund request for {amount} is on record.")


# --- the workflow ------------------------------------------------------------------------------
def _request(env: StepEnv) -> RefundRequest | None:
    pk = env.state.get("refund_request")
    if not pk:
        return None
    return billing_selectors.refund_request_get_for_customer(
        customer=env.customer, refund_request_id=int(pk)
    )


def _decide(env: StepEnv, charge: Charge, how: str, state: dict[str, Any]) -> StepOutcome:
    """Apply the policy to fresh rows and act on it."""
    charge.refresh_from_db()
    decision = policy.evaluate_refund(charge=charge, at=timezone.now())
    state = {**state, "charge": charge.ref, "clause": decision.clause, "step": "decided"}
    detail = {"charge": charge.ref, "identified_by": how, "clause": decision.clause}
    if decision.escalate:
        return StepOutcome(
            kind="refund_decide",
            state=state,
            next="escalate",
            reply=Reply(
                f"I've looked at the charge for invoice {charge.invoice.number}: "
                f"{decision.reason} I've passed your case to our support team, who will reply "
                "here (staff work Monday to Friday, 08:00-18:00 CET)."
            ),
            escalation=EscalationDraft(
                reason=decision.clause,
                detail=decision.reason,
                facts={"charge": charge.ref, "decision": decision.as_evidence()},
            ),
            detail=detail,
        )
    if not decision.refundable:
        return StepOutcome(
            kind="refund_decide",
            state=state,
            next="await_customer",
            reply=Reply(
                f"I've checked the charge of {money(charge.amount, charge.currency)} for invoice "
                f"{charge.invoice.number}. {decision.reason} So I can't request a refund for it. "
                "If you meant another charge, tell me which one; if you think this is wrong, I "
                "can pass it to a human on our team."
            ),
            detail=detail,
        )
    elsewhere = (
        billing_selectors.refund_requests_for_customer(customer=env.customer)
        .filter(charge=charge, state__in=[RefundRequestState.PROPOSED, RefundRequestState.APPROVED])
        .exclude(source=f"ticket:{env.ticket.pk}")
        .first()
    )
    if elsewhere is not None:
        # Asked before, in another conversation: that request stands; no second one.
        return StepOutcome(
            kind="refund_exists",
            state={**state, "refund_request": elsewhere.pk},
            next="await_approval"
            if elsewhere.state == RefundRequestState.PROPOSED
            else "await_customer",
            reply=Reply(
                f"A refund for invoice {charge.invoice.number} has already been requested. "
                f"{status_text(elsewhere)}"
            ),
            refund_request_id=elsewhere.pk,
            detail={**detail, "refund_request": elsewhere.pk, "existing": True},
        )
    asked = _asked_amount(env.message, charge, decision.refundable_amount)
    try:
        request = _create(env, charge, decision.reason, asked)
    except billing_services.RefundNotAllowed as exc:
        return StepOutcome(
            kind="refund_decide",
            state=state,
            next="escalate",
            reply=Reply(
                "I couldn't put this refund request through, so I've passed it to our support "
                "team; they will reply here."
            ),
            escalation=EscalationDraft(
                reason="refund_refused", detail=str(exc), facts={"charge": charge.ref}
            ),
            detail={**detail, "error": str(exc)},
        )
    state["refund_request"] = request.pk
    return StepOutcome(
        kind="refund_request",
        state=state,
        next="await_customer" if request.auto_approved else "await_approval",
        reply=Reply(_requested_text(request, charge)),
        refund_request_id=request.pk,
        detail={**detail, "refund_request": request.pk, "auto_approved": request.auto_approved},
    )


def _asked_amount(text: str, charge: Charge, refundable: Decimal) -> Decimal | None:
    """A smaller amount the customer asks for ("just $5 of it"), in the charge's currency; the
    policy's figure stays the ceiling (refund_request_create checks it again)."""
    if not _PARTIAL.search(text):
        return None
    from support.guard import amounts_in

    asked = [a for a, currency in amounts_in(text) if currency == charge.currency]
    smaller = [a for a in asked if Decimal(0) < a < refundable]
    return smaller[0] if len(smaller) == 1 else None


def _create(env: StepEnv, charge: Charge, reason: str, amount: Decimal | None) -> RefundRequest:
    """The ticket's request for `charge` (idempotent: a repeated step returns the same one; a
    request the customer withdrew is replaced by a new one when they ask again)."""
    key = f"ticket:{env.ticket.pk}:charge:{charge.ref}" + (f":{amount}" if amount else "")
    for attempt in range(3):
        request = env.write(
            billing_services.refund_request_create,
            customer=env.customer,
            charge=charge,
            amount=amount,
            proposed_by=f"support:run:{env.run.pk}",
            reason=reason,
            source=f"ticket:{env.ticket.pk}",
            idempotency_key=key if attempt == 0 else f"{key}:step:{env.run.step}:{attempt}",
        )
        if request.state != RefundRequestState.WITHDRAWN:
            return request
    raise billing_services.RefundNotAllowed("the customer withdrew this request repeatedly")


def _identify_and_decide(env: StepEnv, text: str, state: dict[str, Any]) -> StepOutcome:
    excluded = list(state.get("excluded") or [])
    charge, how = identify(env, text, excluded)
    if charge is not None:
        return _decide(env, charge, how, state)
    charges = _candidates(env, excluded)
    if how == "none":
        reply = (
            "I can't find a charge on your account that could be refunded. If you were charged "
            "by someone else's account or by your bank, I can pass this to a human on our team."
        )
    elif how == "not_found":
        reply = (
            "I couldn't find a charge or invoice with that reference on your account. Which of "
            f"your invoices do you mean? {_listing(charges)}."
        )
    else:
        reply = f"Which invoice do you mean? These are your recent ones: {_listing(charges)}."
    return StepOutcome(
        kind="refund_ask",
        state={**state, "step": "identify", "asked": int(state.get("asked", 0)) + 1},
        next="await_customer",
        reply=Reply(reply),
        detail={"identified_by": how},
    )


def step(env: StepEnv) -> StepOutcome:
    """The workflow's next step for the message in `env.message`."""
    state = env.state
    text = env.message
    request = _request(env)
    if not state.get("step"):
        return _identify_and_decide(env, text, {"step": "identify"})

    # The workflow already holds the conversation: repair first.
    if _CANCEL.search(text):
        if request is None:
            return StepOutcome(
                kind="refund_cancel",
                state={**state, "step": "cancelled"},
                next="reply",
                reply=Reply("No problem: I haven't requested any refund, so nothing changes."),
            )
        withdrawn = env.write(
            billing_services.refund_request_withdraw,
            refund_request=request,
            note="The customer withdrew it in the conversation.",
        )
        amount = money(request.amount, request.currency)
        reply = (
            f"Okay, I've withdrawn the refund request for {amount}. Nothing will be refunded."
            if withdrawn
            else f"I can't withdraw it any more. {status_text(request)}"
        )
        return StepOutcome(
            kind="refund_cancel",
            state={
                **state,
                "step": "cancelled",
                "refund_request": None if withdrawn else request.pk,
            },
            next="reply",
            reply=Reply(reply),
            detail={"withdrawn": withdrawn},
        )
    names_other = bool(_INVOICE.search(text) or _CHARGE.search(text))
    if _CORRECT.search(text) or (names_other and state.get("charge")):
        excluded = list(state.get("excluded") or [])
        previous = state.get("charge")
        if request is not None and not env.write(
            billing_services.refund_request_withdraw,
            refund_request=request,
            note="The customer meant another charge.",
        ):
            return StepOutcome(
                kind="refund_correct",
                state=state,
                next="await_customer",
                reply=Reply(
                    "That request has already been decided, so I can't swap it. "
                    f"{status_text(request)} I can pass the other charge to a human on our "
                    "team."
                ),
            )
        if previous and not names_other:
            excluded.append(previous)
        return _identify_and_decide(
            env, text, {"step": "identify", "excluded": excluded, "refund_request": None}
        )
    if state.get("step") == "identify":
        # We asked which invoice: this message is the answer.
        return _identify_and_decide(env, text, state)
    if request is not None and _WHY.search(text) and not router.wants_human(text):
        # "Why only $9?": the policy's own reason, with the figures it used.
        reason = request.reason.split(" (agent confidence")[0]
        return StepOutcome(
            kind="refund_explain",
            state=state,
            next="await_approval"
            if request.state == RefundRequestState.PROPOSED
            else "await_customer",
            reply=Reply(f"{reason} {status_text(request)}"),
        )
    if request is not None and _PARTIAL.search(text):
        asked = _asked_amount(text, request.charge, request.amount + Decimal("0.01"))
        if asked is not None and env.write(
            billing_services.refund_request_withdraw,
            refund_request=request,
            note=f"The customer asked for {asked} instead.",
        ):
            return _decide(env, request.charge, "correction", {**state, "refund_request": None})
    ruled = router.by_rules(text)
    if ruled is not None and ruled.lane == "refund":
        return _identify_and_decide(env, text, {"step": "identify", "excluded": []})
    if ruled is not None and ruled.lane == "agent":
        # A new account matter, not a repair of this one: the router takes it from here.
        return StepOutcome(kind="refund_handover", state=state, next="reroute")
    if _THANKS.match(text):
        status = f" {status_text(request)}" if request is not None else ""
        return StepOutcome(
            kind="refund_ack",
            state=state,
            next="await_approval"
            if request is not None and request.state == RefundRequestState.PROPOSED
            else "await_customer",
            reply=Reply(f"You're welcome!{status}"),
        )
    # A digression: answer it from the help center, then say where the refund stands.
    answer, detail = faq.answer_question(env, text)
    if request is not None:
        answer = Reply(f"{answer.text}\n\n{status_text(request)}", answer.sources)
    return StepOutcome(
        kind="refund_digress",
        state=state,
        next="await_approval"
        if request is not None and request.state == RefundRequestState.PROPOSED
        else "await_customer",
        reply=answer,
        detail=detail,
    )
