"""Review of the log scrubbing: card numbers as people write them, and the SDK's request dumps
on a real worker whose customer message holds an email and a card number."""

from __future__ import annotations

import json
import time

import pytest

from ledgerly.observability import scrub_text
from support import services
from support.selectors import ticket_settled
from tests.support.conftest import customer

CARD = "4111 1111 1111 1111"
CARD_PLAIN = "4111111111111111"
EMAIL = "review.private@gmail.com"


@pytest.mark.parametrize(
    "raw",
    [
        f"my card is {CARD}.",  # the end of a sentence
        f"charged on {CARD_PLAIN}. Please refund",
        f"card ({CARD}), thanks",
        f"cards: {CARD_PLAIN};{CARD_PLAIN}",
    ],
)
def test_a_card_number_at_the_end_of_a_sentence_is_redacted(raw):
    clean = scrub_text(raw)
    assert CARD not in clean
    assert CARD_PLAIN not in clean
    assert "[redacted:card]" in clean


@pytest.mark.parametrize("kept", ["amount 1234567890123.45 cents", "v1.2345678901234.5"])
def test_decimal_figures_are_not_taken_for_cards(kept):
    assert scrub_text(kept) == kept


@pytest.mark.slow
def test_a_debug_worker_logs_no_message_body_email_or_card(demo_world, celery_worker_process):
    """LOG_LEVEL=DEBUG is what an operator sets to chase a problem: the SDK's own request
    dumps (the whole prompt, with the customer's message) must not reach the log."""
    worker = celery_worker_process(concurrency=1, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    body = "Zebra-quartz-marker question"
    text = f"{body}: how do I download an invoice? Write to {EMAIL}, my card is {CARD}."
    ticket = services.ticket_submit(customer=customer("emma.schulz@example.com"), text=text)
    deadline = time.monotonic() + 90
    while not ticket_settled(ticket=ticket) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ticket_settled(ticket=ticket), worker.output()[-3000:]
    time.sleep(0.5)
    output = worker.output()
    assert '"llm.call"' in output  # the worker did log its model call
    for secret in (EMAIL, CARD, CARD_PLAIN, body):
        assert secret not in output, next(
            (line for line in output.splitlines() if secret in line), ""
        )[:800]
    json.loads(next(line for line in output.splitlines() if '"llm.call"' in line))
