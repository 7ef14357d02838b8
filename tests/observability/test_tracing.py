"""OpenTelemetry spans for the run, its steps, its model calls and its tool calls."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry import trace

from ledgerly import tracing
from support.models import Run
from tests.support.conftest import ask

ROOT = Path(__file__).resolve().parents[2]


def test_a_ticket_run_is_one_trace_of_steps_model_calls_and_tool_calls(
    demo_world, sim_gateway, spans
):
    with tracing.span("test.request") as request_span:
        trace_id = request_span.get_span_context().trace_id
        ticket = ask(
            "ben.okafor@example.com",
            "refund the double charge please, and also how many invoices can I send per month "
            "on my plan?",
        )
    finished = spans.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    assert {s.context.trace_id for s in finished} == {trace_id}

    steps = by_name["support.step"]
    step_ids = {s.context.span_id for s in steps}
    assert len(steps) >= 3
    assert {s.attributes["ledgerly.ticket_id"] for s in steps} == {ticket.pk}

    calls = by_name["llm.call"]
    assert all(c.parent.span_id in step_ids for c in calls)
    answered = [c for c in calls if c.attributes["llm.outcome"] == "ok"]
    assert answered
    assert all(c.attributes["llm.input_tokens"] > 0 for c in answered)
    assert all(c.attributes["llm.output_tokens"] > 0 for c in answered)
    assert all(c.attributes["llm.cost_usd"] > 0 for c in answered)
    assert all(c.end_time - c.start_time >= 0 for c in calls)
    assert {c.attributes["llm.ticket_id"] for c in calls} == {str(ticket.pk)}

    tools = by_name["tool.call"]
    assert tools
    assert all(t.parent.span_id in step_ids for t in tools)
    assert {t.attributes["tool.outcome"] for t in tools} == {"ok"}
    assert "list_charges" in {t.attributes["tool.name"] for t in tools}

    run = Run.objects.get(ticket=ticket)
    (summary,) = by_name["support.run"]
    assert summary.attributes["ledgerly.outcome"] == ticket.state
    assert summary.attributes["ledgerly.tokens"] == run.tokens
    assert summary.attributes["ledgerly.cost_usd"] == pytest.approx(float(run.cost_usd))
    assert summary.attributes["ledgerly.lane"] == "agent"


def test_no_exporter_is_installed_without_an_endpoint():
    provider = trace.get_tracer_provider()
    # Only the test's in-memory exporter (conftest) is attached: nothing leaves the process.
    processors = provider._active_span_processor._span_processors  # type: ignore[attr-defined]
    assert [type(p).__name__ for p in processors] == ["SimpleSpanProcessor"]


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.mark.slow
def test_spans_go_to_the_otlp_endpoint_when_one_is_set():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        script = (
            "import django; django.setup()\n"
            "from opentelemetry import trace\n"
            "from ledgerly import tracing\n"
            "with tracing.span('support.step', **{'ledgerly.run_id': 7}):\n"
            "    pass\n"
            "trace.get_tracer_provider().shutdown()\n"
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        }
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)
    finally:
        server.shutdown()
    (path, content_type, body) = _Collector.received[-1]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"support.step" in body
    assert b"ledgerly.run_id" in body


def test_a_step_resumed_under_another_trace_stays_in_the_messages_trace(spans):
    from support import telemetry

    with tracing.span("test.request") as request_span:
        checkpoint = telemetry.message_begun({"phase": "lane", "lane": "agent"}, step=0)
    message_trace = request_span.get_span_context().trace_id
    with tracing.span("celery.task support.tasks.sweep_runs") as sweep:
        assert sweep.get_span_context().trace_id != message_trace
        with telemetry.step_scope(run_id=1, ticket_id=1, step=3, checkpoint=checkpoint):
            ids = tracing.current_ids()
    (step,) = [s for s in spans.get_finished_spans() if s.name == "support.step"]
    assert step.context.trace_id == message_trace
    assert ids is not None
    assert ids[0] == format(message_trace, "032x")
