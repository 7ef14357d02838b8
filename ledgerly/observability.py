"""Structured logging (structlog over the standard library), scrubbing, the request middleware
that starts a ticket's trace, and Sentry wiring.

Every log line carries the trace id of the OpenTelemetry span it was written in (see
ledgerly/tracing.py): the web request starts the trace (or continues the caller's W3C
`traceparent`), Celery headers carry it into every task, and the gateway's and tools' spans are
children of the step that made them, so one trace id follows a ticket's message from the request
to its `run.finished` line. Nothing secret or personal is written: `scrub` runs over every
event (structlog's and the standard library's) and over everything sent to Sentry.
"""

from __future__ import annotations

import logging.config
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse

# --- scrubbing -----------------------------------------------------------------------------------

_API_KEY = re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{12,}")
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes (how people type card numbers);
# not part of a longer word or a decimal figure, but a sentence's full stop may follow.
_CARDLIKE = re.compile(r"(?<!\w)(?<!\d\.)\d(?:[ \-]?\d){12,18}(?!\w|\.\d)")
# Two letters, two check digits, 11-30 alphanumerics (optionally in groups of four).
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# A URL's password (DSNs: scheme://user:password@host).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)
# Field names whose values are secrets whatever they look like ("input_tokens" is not one).
_SECRET_KEYS = re.compile(
    r"(^|[_\-])(pass(word)?|secret|token|api[_\-]?key|authorization|cookies?|dsn|credentials?)$",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def luhn_ok(digits: str) -> bool:
    """True when `digits` passes the Luhn check (what every payment card number does)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[redacted:card]" if luhn_ok(digits) else match.group(0)


def scrub_text(text: str) -> str:
    """`text` with API keys, bearer tokens, URL passwords, emails, card numbers (Luhn-valid) and
    IBAN-like account numbers replaced."""
    text = _API_KEY.sub("[redacted:api_key]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}[redacted]@", text)
    text = _EMAIL.sub("[redacted:email]", text)
    text = _IBAN.sub("[redacted:iban]", text)
    return _CARDLIKE.sub(_card, text)


def scrub(value: Any, *, depth: int = 0) -> Any:
    """A copy of `value` (strings, mappings, sequences) scrubbed by `scrub_text`; a value kept
    under a key that names a secret (password, token, api_key, authorization, ...) is dropped."""
    if depth > 12:
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and _SECRET_KEYS.search(k) and v not in (None, "", [], {})
                else scrub(v, depth=depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, depth=depth + 1) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        return scrub_text(str(value)) if _CARDLIKE.fullmatch(str(abs(value))) else value
    return value


def scrub_processor(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: scrub every field of the event (exception text included)."""
    return scrub(dict(event_dict))  # type: ignore[no-any-return]


# --- trace ids in log lines ----------------------------------------------------------------------


def add_trace_ids(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Put the current span's trace and span ids on the line (the W3C hex forms)."""
    from ledgerly.tracing import current_ids

    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def _shared_processors() -> list[structlog.typing.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]


def make_formatter(fmt: str) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter of every handler: JSON lines or console lines, scrubbed."""
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # Last before rendering, so exception text and extra fields are scrubbed as well.
            scrub_processor,
            renderer,
        ],
        # The standard library's `extra={...}` fields (billing logs with them) are attributes
        # of the LogRecord: without ExtraAdder they are dropped.
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
    )


def configure_logging(*, level: str, fmt: str) -> None:
    """JSON lines in production, readable console lines in development; one pipeline for both
    structlog loggers and the standard library's (Django, Celery)."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {"()": "ledgerly.observability.make_formatter", "fmt": fmt}
            },
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
            "root": {"handlers": ["console"], "level": level},
            "loggers": {
                "django.db.backends": {"level": "WARNING"},
                "httpx2": {"level": "WARNING"},
                # The SDK's DEBUG lines dump whole requests: the prompt, a customer's message.
                "anthropic": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


# --- the request middleware ----------------------------------------------------------------------

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_request_log = structlog.get_logger("ledgerly.request")


def request_id_from(request: HttpRequest) -> str:
    """The caller's request id when it is a plain token (kept short: it is logged), else a new
    one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID_OK.fullmatch(given) else secrets.token_hex(8)


class TraceMiddleware:
    """Starts the request's server span (continuing a valid W3C `traceparent`), binds the
    request id to every log line of the request, answers with `X-Request-ID` and `traceparent`,
    and writes one `http.request` line per request (method, route, status, duration; never the
    query string or body)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from ledgerly import tracing

        request_id = request_id_from(request)
        with (
            structlog.contextvars.bound_contextvars(request_id=request_id),
            tracing.server_span(request) as span,
        ):
            response = self.get_response(request)
            match = getattr(request, "resolver_match", None)
            route = getattr(match, "route", "") or ""
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            response[REQUEST_ID_HEADER] = request_id
            traceparent = tracing.traceparent()
            if traceparent:
                response["traceparent"] = traceparent
            if request.path not in ("/healthz", "/readyz", "/metrics"):
                _request_log.info(
                    "http.request",
                    method=request.method,
                    route=route,
                    status=response.status_code,
                    duration_ms=round(tracing.elapsed_ms(span), 1),
                )
            return response


# --- Sentry --------------------------------------------------------------------------------------


def sentry_before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Scrub what Sentry would receive: messages, exception values, breadcrumbs, request data,
    local variables. Personal data is also off at the source (send_default_pii=False)."""
    scrubbed = scrub(event)
    request = scrubbed.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        request.pop("data", None)  # a customer's message is personal data
    user = scrubbed.get("user")
    if isinstance(user, dict):
        scrubbed["user"] = {"id": user["id"]} if "id" in user else {}
    return scrubbed  # type: ignore[no-any-return]


def sentry_before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    return scrub(crumb)  # type: ignore[no-any-return]


def configure_sentry(
    *, dsn: str | None, environment: str, traces_sample_rate: float, release: str | None = None
) -> bool:
    """Start the Sentry SDK (Django and Celery integrations) when a DSN is set; True if so."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,
        include_local_variables=False,  # locals hold customers' messages and rows
        max_request_body_size="never",
        before_send=sentry_before_send,  # type: ignore[arg-type]
        before_breadcrumb=sentry_before_breadcrumb,  # type: ignore[arg-type]
        integrations=[DjangoIntegration(), CeleryIntegration()],
    )
    return True
