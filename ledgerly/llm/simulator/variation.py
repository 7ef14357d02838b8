"""Seeded variation: how one sampled answer of the simulated model differs from another.

A real model sampled twice on the same request words its answer differently, orders independent
steps differently and reports a slightly different confidence, while (if it is any good) keeping
every fact. The evaluation harness runs each golden ticket K times and reports pass^K, which
only measures robustness if the repeats differ like that. So with a non-zero seed
(`LLM_SIMULATOR_SEED`, or per request `x-sim-seed: N`) the competent model varies:

- the wording of its own prose (greetings, connectives, synonyms, the order of independent
  sentences), never the facts inside it: every variant of a phrase carries the same placeholders
  (amounts, ids, dates, `[slug]` citations), filled with the same values;
- the order of independent read-only tool calls, and whether two of them go out in one turn;
- the confidence it reports in structured outputs, within ±0.1 (clamped), never the label.

Each choice is a hash of (seed, request, what is being chosen), not a draw from a shared random
stream, so the same (seed, request) always gives the same answer, whatever ran before or in
parallel. Seed 0 makes every choice the first option: the simulator's historic, deterministic
output.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

CONFIDENCE_SPREAD = 0.1
TRANSPORT_FIELDS = frozenset({"stream", "metadata"})


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()


def unit(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts` (uniform enough for simulation; not for secrets)."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2**64


@dataclass(frozen=True)
class Variation:
    """The seeded choices for one request. `Variation.none()` always takes the first option."""

    seed: int = 0
    basis: str = ""  # a digest of the request: what the model was asked

    @classmethod
    def of(cls, *, seed: int, body: Mapping[str, Any]) -> Variation:
        if seed == 0:
            return cls()
        # How the answer travels (JSON or SSE) and the caller's metadata are not what the model
        # was asked: the same prompt streamed or not gets the same sample.
        asked = {k: v for k, v in body.items() if k not in TRANSPORT_FIELDS}
        basis = hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()
        return cls(seed=seed, basis=basis)

    @classmethod
    def none(cls) -> Variation:
        return cls()

    @property
    def active(self) -> bool:
        return self.seed != 0

    def unit(self, key: str) -> float:
        return unit(self.seed, self.basis, key)

    def pick(self, key: str, options: Sequence[T]) -> T:
        if not self.active or len(options) == 1:
            return options[0]
        return options[int(self.unit(key) * len(options))]

    def chance(self, key: str, probability: float) -> bool:
        return self.active and self.unit(key) < probability

    def shuffled(self, key: str, items: Sequence[T]) -> list[T]:
        if not self.active:
            return list(items)
        ranked = sorted(range(len(items)), key=lambda i: self.unit(f"{key}#{i}"))
        return [items[i] for i in ranked]

    def jitter(self, key: str, value: float, *, low: float = 0.0, high: float = 1.0) -> float:
        """`value` moved by at most ±CONFIDENCE_SPREAD, kept in [low, high]."""
        if not self.active:
            return value
        moved = value + (self.unit(key) * 2 - 1) * CONFIDENCE_SPREAD
        return round(min(high, max(low, moved)), 2)

    # ------------------------------------------------------------------------------ prose
    def say(self, key: str, **facts: Any) -> str:
        """One wording of phrase `key` from PHRASES, with `facts` filled in unchanged."""
        return self.pick(key, PHRASES[key]).format(**facts)

    def sentences(self, key: str, parts: Sequence[str]) -> str:
        """Independent sentences, joined in a seeded order (as given for seed 0)."""
        return " ".join(p for p in self.shuffled(key, [p for p in parts if p]))

    def opener(self, key: str, kind: str = "opener") -> str:
        """An optional greeting or connective before an answer ("" for seed 0)."""
        return self.pick(key, PHRASES[kind])


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


# Every variant of a phrase must name the same placeholders (tests check it), so a variant can
# never drop or add a fact. The first variant is the seed-0 wording; change it only together with
# the tests that pin it.
PHRASES: dict[str, tuple[str, ...]] = {
    "opener": (
        "",
        "Hi! ",
        "Hello, and thanks for reaching out. ",
        "Thanks for getting in touch. ",
        "Hi there. ",
        "",
    ),
    "resume": (
        "",
        "Thanks for waiting. ",
        "Thanks for your patience. ",
        "All right. ",
        "Okay, ",
        "",
    ),
    "faq_lead": (
        "",
        "Here's what our help center says: ",
        "According to our help center: ",
        "From our help-center articles: ",
        "",
    ),
    "not_found": (
        "I'm sorry, I couldn't find the answer to that in our help center, and I don't want to "
        "guess. Would you like me to bring in a person from our support team to help?",
        "I couldn't find that in our help center, I'm afraid, and I'd rather not guess. Shall I "
        "bring in a person from our support team?",
        "Sorry, our help center doesn't cover that, and I don't want to guess. I can ask a "
        "person from our support team to help if you like.",
        "I wasn't able to find an answer to that in our help center, so rather than guess, I can "
        "bring in a person from our support team. Would that help?",
    ),
    "greeting": (
        "Hello! How can I help with your Ledgerly billing today?",
        "Hi! What can I help you with on your Ledgerly billing today?",
        "Hello, how can I help with your Ledgerly account or billing today?",
        "Hi there! What billing question can I help with today?",
    ),
    "ask_details": (
        "I'm sorry about that charge. I can look into a refund for you: please tell me the "
        "email address on your account and, if you have it, the invoice number.",
        "Sorry about that charge. I can check whether a refund is possible: could you tell me "
        "the email address on your account and, if you have it, the invoice number?",
        "I'm sorry to hear about that charge. To look into a refund, I need the email address on "
        "your account and, if you have it, the invoice number.",
        "Sorry for the trouble with that charge. If you send me the email address on your "
        "account (and the invoice number, if you have it), I'll look into a refund.",
    ),
    "faq_no_passages": (
        "I don't have help-center passages about that in front of me, so I don't want to "
        "guess. I can bring in a person from our support team to answer it.",
        "I don't have any help-center articles on that to hand, and I'd rather not guess. A "
        "person from our support team can answer it for you.",
        "I can't see help-center material on that right now, so instead of guessing I can ask a "
        "person from our support team to answer it.",
    ),
    "pass_on": (
        "Thanks for the details. This needs a closer look at your account, so I'll pass it to "
        "a person from our support team, who will follow up with you here.",
        "Thanks for explaining. This needs someone to look closely at your account, so I'm "
        "passing it to a person from our support team; they'll follow up with you here.",
        "Thank you for the details. A person from our support team needs to look at your "
        "account for this, and they will follow up with you here.",
    ),
    # Agent narration between tool calls.
    "look_account": (
        "Let me look up your account first.",
        "First, I'll look up your account.",
        "I'll start by pulling up your account.",
        "Let me find your account.",
    ),
    "look_charges": (
        "I'll check the charges on your account.",
        "Let me check the charges on your account.",
        "Next, the charges on your account.",
        "I'll look at the payments taken from your account.",
    ),
    "look_invoices": (
        "Let me check your invoices.",
        "I'll check your invoices.",
        "Let me look at your invoices.",
        "I'll pull up your invoices.",
    ),
    "look_memory": (
        "Let me check what we know from your earlier conversations.",
        "I'll check the notes from your earlier conversations.",
        "Let me see what you told us before.",
    ),
    "look_other": (
        "Let me check that with {tool}.",
        "I'll check that with {tool}.",
        "Let me look that up with {tool}.",
        "I'll use {tool} to check.",
    ),
    "duplicate_found": (
        "Charges {ids} are the same amount for invoice {invoice}: {charge} is the duplicate.",
        "Charges {ids} have the same amount and the same invoice, {invoice}: {charge} is the "
        "duplicate.",
        "The charges {ids} are for the same amount on invoice {invoice}, so {charge} is the "
        "duplicate.",
        "Invoice {invoice} was charged twice ({ids}); the later charge, {charge}, is the "
        "duplicate.",
    ),
    "named_charge": (
        "The customer names charge {charge}.",
        "The customer mentions charge {charge} by name.",
        "The customer says which charge it is: {charge}.",
    ),
    "one_charge": (
        "The account has one charge, {charge}.",
        "There is only one charge on the account, {charge}.",
        "The account shows a single charge, {charge}.",
    ),
    "priced_charge": (
        "Charge {charge} is the one for the amount the customer gave.",
        "Charge {charge} matches the amount the customer gave.",
        "The amount the customer gave matches charge {charge}.",
    ),
    "newest_charge": (
        "Charge {charge} is the most recent charge on the account.",
        "The most recent charge on the account is {charge}.",
        "Charge {charge} is the latest one on the account.",
    ),
    "propose": (
        "{why} I'll propose a refund for {charge}; staff will review it.",
        "{why} I'm proposing a refund for {charge} for staff to review.",
        "{why} Next I'll propose a refund of {charge}, which staff will review.",
    ),
    "hand_over": (
        "{reason} I'm handing this to a person.",
        "{reason} I'll hand this to a person.",
        "{reason} A person needs to take this over.",
    ),
    "dispute": (
        "The charge is under dispute (chargeback), so support cannot refund it; a person needs "
        "to handle it.",
        "There is a dispute (chargeback) open on the charge, so support can't refund it; a "
        "person has to handle it.",
        "A chargeback (dispute) is open on this charge, so it cannot be refunded through "
        "support; a person needs to take it.",
    ),
    "dispute_charge": (
        "Charge {charge} ({amount}) is under dispute (chargeback), so support cannot refund it; "
        "a person needs to handle it.",
        "There is a dispute (chargeback) open on charge {charge} ({amount}), so support can't "
        "refund it; a person has to handle it.",
        "A chargeback (dispute) is open on charge {charge} ({amount}), so it cannot be refunded "
        "through support; a person needs to take it.",
    ),
    # Final answers after tools.
    "escalated": (
        "I've passed your case to a person from our support team{why}. They will follow up "
        "with you here; you don't need to do anything else for now.",
        "I've handed your case to a person from our support team{why}. They'll follow up with "
        "you here, and there's nothing else you need to do for now.",
        "Your case is now with a person from our support team{why}. They will get back to you "
        "here; you don't need to do anything else in the meantime.",
    ),
    "refund_submitted": (
        "I've submitted a refund request for {amount} on charge {charge}.",
        "I've put in a refund request for {amount} on charge {charge}.",
        "I've requested a refund of {amount} for charge {charge}.",
        "A refund request for {amount} on charge {charge} is now in.",
    ),
    "refund_pending": (
        "A member of our team reviews every refund request before any money is returned; "
        "you'll hear from us as soon as it has been reviewed.",
        "Someone from our team reviews each refund request before any money moves, and we'll "
        "let you know as soon as they have looked at it.",
        "It now waits for a review by our team; we'll tell you here as soon as that is done.",
    ),
    "refund_approved": (
        "It has been approved and is on its way back to your original payment method.",
        "It's been approved and is on its way back to your original payment method.",
        "It was approved and the money is on its way back to your original payment method.",
    ),
    "refund_auto_approved": (
        "It was approved automatically and is on its way back to your original payment method.",
        "It has been approved automatically, so the money is on its way back to your original "
        "payment method.",
        "It was approved automatically; the money is on its way back to your original payment "
        "method.",
    ),
    "refund_declined": (
        "The refund request was not accepted ({status}), so I've noted it for a person from our "
        "support team to look at.",
        "The request came back as {status}, so a person from our support team will look at it.",
    ),
    "refund_not_allowed": (
        "I checked, and a refund isn't possible here: {detail}. If you think this is wrong, I "
        "can bring in a person from our support team.",
        "I'm sorry, but this charge can't be refunded: {detail}. If you believe that's a "
        "mistake, I can bring in a person from our support team.",
        "Unfortunately our refund policy doesn't allow a refund here: {detail}. I can bring in "
        "a person from our support team if you'd like a second look.",
    ),
    "refund_refused": (
        "I wasn't able to submit that refund request, so I've asked a person from our support "
        "team to look at it; they will follow up with you here.",
        "That refund request didn't go through, so I've asked a person from our support team to "
        "look at it; they'll follow up with you here.",
        "I couldn't submit the refund request, so a person from our support team will look at "
        "it and follow up with you here.",
    ),
    "nothing_taken": (
        "I've checked your account: {statuses}. No money was taken for those, so there is "
        "nothing to refund.",
        "I've looked at your account: {statuses}. Since no money was taken for those, there is "
        "nothing to refund.",
        "Your account shows: {statuses}. No money was taken for those, so there is nothing to "
        "refund.",
    ),
    "already_refunded": (
        "Charge {charge} has already been refunded in full, so there is nothing left to refund. "
        "If you still see it on your statement, it can take a few days to clear.",
        "Charge {charge} was already refunded in full, so there is nothing left to refund. If it "
        "still shows on your statement, it can take a few days to clear.",
        "There is nothing left to refund: charge {charge} has already been refunded in full. It "
        "can take a few days to clear from your statement.",
    ),
    "not_refundable": (
        "I've checked charge {charge}: according to your account records it is not "
        "refundable{detail}. If you think this is wrong, I can bring in a person from our "
        "support team.",
        "I've looked at charge {charge}: your account records say it is not refundable{detail}. "
        "If that seems wrong, I can bring in a person from our support team.",
        "According to your account records, charge {charge} is not refundable{detail}. If you "
        "think that's a mistake, I can bring in a person from our support team.",
    ),
    "found_charge": (
        "I found the charge you mean: {charge} ({details}). If something about it doesn't look "
        "right, tell me what you expected and I'll take it from there.",
        "Here is the charge you mean: {charge} ({details}). If anything about it looks wrong, "
        "tell me what you expected and I'll take it from there.",
        "That's charge {charge} ({details}). If something about it isn't right, let me know what "
        "you expected and I'll go from there.",
    ),
    "charges_listed": (
        "I've checked your account. The charges I found are: {listed}. If something there "
        "doesn't look right, tell me which charge it is and I'll take it from there.",
        "I've looked through your account. These are the charges I found: {listed}. If one of "
        "them looks wrong, tell me which and I'll take it from there.",
        "Here are the charges on your account: {listed}. If something there doesn't look right, "
        "let me know which charge it is and I'll go from there.",
    ),
    "account_checked": (
        "I've looked at your account. If something there doesn't look right, tell me which "
        "charge it is and I'll take it from there.",
        "I've checked your account. If something doesn't look right, tell me which charge it is "
        "and I'll go from there.",
        "I've gone through your account. Tell me which charge looks wrong and I'll take it from "
        "there.",
    ),
    # Account facts in a final answer, each from a lookup's result.
    "fact_vat_on_file": (
        "Your account has the VAT ID {vat} on file.",
        "The VAT ID on your account is {vat}.",
        "We have your VAT ID, {vat}, on file.",
    ),
    "fact_no_vat": (
        "There is no VAT ID on your account yet.",
        "Your account doesn't have a VAT ID on file yet.",
        "No VAT ID is on file for your account yet.",
    ),
    "fact_plan": (
        "You're on the {plan} plan ({price}{interval}){until}.",
        "Your plan is {plan} ({price}{interval}){until}.",
        "Your account is on the {plan} plan ({price}{interval}){until}.",
    ),
    "fact_invoice": (
        "Your latest invoice, {number}{when}, came to {total}{tax}.",
        "Your most recent invoice is {number}{when}: {total}{tax}.",
        "The last invoice on your account, {number}{when}, was for {total}{tax}.",
    ),
    "fact_invoices": (
        "Your recent invoices: {listed}.",
        "These are your recent invoices: {listed}.",
        "Your account's recent invoices are {listed}.",
    ),
    "fact_charge": (
        "You were charged {amount}{when} (charge {charge}){refunded}.",
        "Charge {charge}{when} was for {amount}{refunded}.",
        "The charge {charge}{when} took {amount}{refunded}.",
    ),
    "fact_charge_failed": (
        "The payment of {amount}{when} (charge {charge}) did not go through.",
        "Your payment of {amount}{when} (charge {charge}) failed.",
        "Charge {charge} for {amount}{when} failed, so no money was taken.",
    ),
    "fact_paid_total": (
        "In all, {count} payments came to {total}{refunded}.",
        "Altogether, {count} payments came to {total}{refunded}.",
        "Your {count} payments add up to {total}{refunded}.",
    ),
    "refund_capped": (
        "The charge was {charged}; {amount} is what our refund policy allows for it.",
        "That's the amount our refund policy allows ({amount} of the {charged} charge).",
        "Of the {charged} charge, our refund policy allows {amount}.",
    ),
    "findings_narration": (
        "I have what I need to answer.",
        "That's everything I need to answer.",
        "I can answer now.",
    ),
}
