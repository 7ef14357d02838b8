"""OpenTelemetry spans: the web request, every Celery task, every run step, model call and tool
call, and the run's summary.

A process always has an SDK TracerProvider, so trace ids exist for the logs (see
ledgerly/observability.py) even with no exporter. Spans leave the process only when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over HTTP/protobuf; the exporter reads the standard
`OTEL_EXPORTER_OTLP_*` variables itself). The trace crosses into Celery tasks through the W3C
`traceparent` message header (ledgerly/celery.py).

A run is a chain of tasks on any number of workers, and a span must start and end in one
process; so each step is a span of its own task, and the run's span is written when its message
is finished (`run_span`), with the start time of the message and the run's totals.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
TRACER_NAME = "ledgerly"
AttributeValue = str | bool | int | float


def configure_tracing(*, service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install this process's TracerProvider (once); with an endpoint, spans are exported by
    OTLP in batches from a background thread."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach another processor (tests attach an InMemorySpanExporter)."""
    provider = _provider or configure_tracing(service_name="ledgerly", otlp_endpoint=None)
    provider.add_span_processor(processor)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def _clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
        else:
            out[key] = float(value) if hasattr(value, "as_tuple") else str(value)  # Decimal
    return out


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span of the current one for the duration of the block; an exception marks it
    as an error (and propagates)."""
    with tracer().start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def set_attributes(target: Span, **attributes: Any) -> None:
    target.set_attributes(_clean(attributes))


def record_span(
    name: str,
    *,
    seconds: float,
    attributes: Mapping[str, Any],
    error: str | None = None,
    parent: otel_context.Context | None = None,
) -> None:
    """A finished span that took `seconds` up to now (for work measured elsewhere: a model
    call recorded by the gateway, a run summarised at its end)."""
    end = time.time_ns()
    start = end - int(max(seconds, 0.0) * 1e9)
    done = tracer().start_span(
        name, context=parent, start_time=start, attributes=_clean(attributes)
    )
    if error:
        done.set_status(Status(StatusCode.ERROR, error[:200]))
    done.end(end_time=end)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in W3C hex, or None outside any span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def traceparent() -> str:
    """The current span as a W3C traceparent header value ("" outside any span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def inject(carrier: MutableMapping[str, Any]) -> None:
    """Write the current trace into `carrier` (message headers)."""
    _propagator.inject(carrier)


class _AttrGetter(Getter[Any]):
    """Reads a header from a mapping or, for a Celery task request, from its attributes."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = carrier.get(key) if isinstance(carrier, Mapping) else getattr(carrier, key, None)
        if value is None and not isinstance(carrier, Mapping):
            headers = getattr(carrier, "headers", None) or {}
            value = headers.get(key) if isinstance(headers, Mapping) else None
        if value is None:
            return None
        return [value] if isinstance(value, str) else list(value)

    def keys(self, carrier: Any) -> list[str]:
        return list(carrier.keys()) if isinstance(carrier, Mapping) else []


_getter = _AttrGetter()


def extract(carrier: Any) -> otel_context.Context:
    """The trace context a carrier (headers, a Celery request) holds; empty when none or
    malformed (a malformed traceparent starts a new trace, as W3C says)."""
    return _propagator.extract(carrier, getter=_getter)


def context_from_traceparent(value: str) -> otel_context.Context | None:
    ctx = extract({"traceparent": value}) if value else None
    if ctx is None or not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


@contextlib.contextmanager
def server_span(request: Any) -> Iterator[Span]:
    """The request's server span, continuing the caller's `traceparent` when it is valid."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    parent = extract(headers)
    with tracer().start_as_current_span(
        f"HTTP {request.method}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method or ""},
    ) as current:
        yield current


def elapsed_ms(target: Span) -> float:
    started = getattr(target, "start_time", None)
    return 0.0 if not started else (time.time_ns() - started) / 1e6


class TaskSpans:
    """The open span of each running Celery task (by task id), attached to its thread's
    context between task_prerun and task_postrun."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[Span, object]] = {}

    def start(self, task_id: str, name: str, carrier: Any) -> None:
        parent = extract(carrier)
        started = tracer().start_span(
            f"celery.task {name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={"celery.task_name": name, "celery.task_id": task_id},
        )
        token = otel_context.attach(trace.set_span_in_context(started))
        self._open[task_id] = (started, token)

    def end(self, task_id: str, *, state: str | None) -> None:
        entry = self._open.pop(task_id, None)
        if entry is None:
            return
        ended, token = entry
        if state and state not in ("SUCCESS",):
            ended.set_status(Status(StatusCode.ERROR, state))
        if state:
            ended.set_attribute("celery.state", state)
        ended.end()
        with contextlib.suppress(ValueError):  # detached in another context (eager nesting)
            otel_context.detach(token)  # type: ignore[arg-type]


task_spans = TaskSpans()
