"""Structured logs: scrubbed, and one trace id from the web request to the run's last line."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from django.http import HttpRequest, JsonResponse
from django.test import RequestFactory

from ledgerly.observability import TraceMiddleware, make_formatter, scrub, scrub_text
from support import services
from support.models import Run, Ticket
from support.selectors import ticket_settled
from tests.support.conftest import customer

KEY = "sk-ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2"
CARD = "4242 4242 4242 4242"
EMAIL = "ben.private@gmail.com"
IBAN = "DE89 3704 0044 0532 0130 00"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("raw", "secret", "replacement"),
    [
        (f"calling with {KEY}", KEY, "[redacted:api_key]"),
        (f"Authorization: {BEARER}", "eyJhbGciOiJIUzI1NiJ9", "Bearer [redacted]"),
        (f"reach me at {EMAIL} please", EMAIL, "[redacted:email]"),
        (f"card {CARD} expires 04/29", CARD, "[redacted:card]"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111", "[redacted:card]"),
        ("card 5555555555554444", "5555555555554444", "[redacted:card]"),
        (f"pay to {IBAN}", IBAN, "[redacted:iban]"),
        ("pay to GB82WEST12345698765432", "GB82WEST12345698765432", "[redacted:iban]"),
        ("postgresql://ledgerly:s3cretpw@db:5432/x", "s3cretpw", "ledgerly:[redacted]@db"),
    ],
)
def test_secrets_and_personal_data_are_scrubbed(raw, secret, replacement):
    clean = scrub_text(raw)
    assert secret not in clean
    assert replacement in clean


@pytest.mark.parametrize(
    "kept",
    [
        "order 1234567812345678 (fails Luhn)",
        "ch_demo_ana_2 on INV-2026-0007 for $49.00",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
        "2026-12-01T22:49:17.043279Z run-42 step 3",
        "claude-sonnet-5-5 used 12345 tokens",
    ],
)
def test_ordinary_operational_text_is_kept(kept):
    assert scrub_text(kept) == kept


def test_fields_named_for_secrets_are_dropped_but_token_counts_kept():
    event = {
        "api_key": "anything",
        "password": "hunter2",
        "input_tokens": 1234,
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "x-request-id": "r-1"},
        "card_number": 4242424242424242,
    }
    assert scrub(event) == {
        "api_key": "[redacted]",
        "password": "[redacted]",
        "input_tokens": 1234,
        "headers": {"Authorization": "[redacted]", "x-request-id": "r-1"},
        "card_number": "[redacted:card]",
    }


@pytest.fixture
def json_log() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """This process's log lines as rendered by the production JSON formatter."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(make_formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    root.removeHandler(handler)
    root.setLevel(level)


def test_both_logging_pipelines_scrub_fields_messages_and_tracebacks(json_log):
    stdlib = logging.getLogger("billing.services")
    try:
        raise ValueError(f"processor said no for {CARD}")
    except ValueError:
        stdlib.exception("charge failed for %s", EMAIL, extra={"note": f"key {KEY}"})
    structlog.get_logger("support.x").warning("step", detail=f"iban {IBAN}", who=EMAIL)
    lines = json_log()
    rendered = json.dumps(lines)
    for secret in (CARD, EMAIL, KEY, IBAN):
        assert secret not in rendered
    assert [line["event"] for line in lines] == [
        "charge failed for [redacted:email]",
        "step",
    ]
    assert "[redacted:card]" in lines[0]["exception"]
    assert lines[0]["note"] == "key [redacted:api_key]"
    assert lines[1]["detail"] == "iban [redacted:iban]"


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.mark.slow
def test_a_ticket_keeps_the_requests_trace_id_through_every_task_call_and_tool(
    demo_world, celery_worker_process, json_log
):
    worker = celery_worker_process(concurrency=2, LOG_FORMAT="json", LOG_LEVEL="INFO")
    who = customer("ben.okafor@example.com")
    text = (
        "refund the double charge please, and also how many invoices can I send per month on "
        f"my plan? My card is {CARD}, write to {EMAIL}, our old key was {KEY}"
    )
    submitted: list[Ticket] = []

    def submit_view(request: HttpRequest) -> JsonResponse:
        ticket = services.ticket_submit(customer=who, text=text)
        submitted.append(ticket)
        # What a careless view might write: the scrubber has to catch it.
        structlog.get_logger("tests.view").info(
            "ticket.submitted", ticket_id=ticket.pk, customer_email=who.email, text=text
        )
        return JsonResponse({"ticket": ticket.pk}, status=202)

    request = RequestFactory().post(
        "/api/tickets",
        HTTP_TRACEPARENT=f"00-{TRACE_ID}-00f067aa0ba902b7-01",
        HTTP_X_REQUEST_ID="req-obs-1",
    )
    response = TraceMiddleware(submit_view)(request)
    assert response.status_code == 202
    assert response["X-Request-ID"] == "req-obs-1"
    assert response["traceparent"].split("-")[1] == TRACE_ID

    ticket = submitted[0]
    deadline = time.monotonic() + 90
    while not ticket_settled(ticket=ticket) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ticket_settled(ticket=ticket), worker.output()[-3000:]
    time.sleep(0.5)  # the last task's lines are flushed after its commit

    web = json_log()
    output = worker.output()
    lines = _json_lines(output)
    everything = output + json.dumps(web)
    for secret in (CARD, EMAIL, KEY, who.email):
        assert secret not in everything

    submitted_line = next(line for line in web if line["event"] == "ticket.submitted")
    assert submitted_line["trace_id"] == TRACE_ID
    assert submitted_line["request_id"] == "req-obs-1"
    assert submitted_line["customer_email"] == "[redacted:email]"
    request_line = next(line for line in web if line["event"] == "http.request")
    assert (request_line["trace_id"], request_line["status"]) == (TRACE_ID, 202)

    steps = [line for line in lines if line.get("task") == "support.tasks.advance_run"]
    assert steps, output[-3000:]
    assert {line["trace_id"] for line in steps} == {TRACE_ID}
    assert {line["request_id"] for line in steps} == {"req-obs-1"}
    calls = [line for line in steps if line["event"] == "llm.call"]
    tools = [line for line in steps if line["event"] == "tool.call"]
    assert calls
    assert tools
    assert {line["ticket_id"] for line in calls} == {str(ticket.pk)}
    assert all(line["outcome"] == "ok" for line in tools)

    # The run's own last line (Celery's "Task ... succeeded" follows it, with the same trace).
    finished = [line for line in steps if "run_id" in line][-1]
    run = Run.objects.get(ticket=ticket)
    ticket.refresh_from_db()
    assert finished["event"] == "run.finished"
    assert finished["outcome"] == ticket.state
    assert finished["tokens"] == run.tokens > 0
    assert finished["cost_usd"] == pytest.approx(float(run.cost_usd))
    assert finished["cost_usd"] > 0
    assert finished["lane"] == "agent"
    assert finished["steps"] >= 3
