"""The simulator core: one HTTP-shaped request in, one HTTP-shaped response out.

`Simulator.handle()` is shared by the in-process `SimulatorTransport` and the HTTP server, so
both speak exactly the same API. All state (prompt cache, rate-limit buckets, fault counters,
batches) belongs to one `Simulator` instance.

Per request, `x-sim-seed: N` picks the sample of the answer (variation.py; 0 = none) and
`x-sim-fault-rate: R` the rate of random transient faults, decided per (seed, request body,
attempt number); both override the settings. The package docstring lists every control.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import brain, rules
from .batches import BatchStore
from .cache import PromptCache, segments_of
from .config import SimulatorConfig
from .errors import SimulatedAPIError, invalid
from .faults import FAULTS, FaultBook
from .models import ModelSpec
from .ratelimits import RateLimiter
from .tokens import count_text
from .variation import unit
from .wire import message_dict, stream_events, usage_dict

log = logging.getLogger("ledgerly.llm.simulator")

SIMULATOR_HEADER = "x-ledgerly-simulator"


class StreamCut(Exception):
    """Raised by a response body iterator where the connection drops mid-body."""


@dataclass
class SimResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    # Streamed bodies are produced lazily (with their latency) by this iterator. It may raise
    # StreamCut part-way to simulate a dropped connection.
    chunks: Iterator[bytes] | None = None
    # The request never gets an answer: the caller sees a read timeout.
    timeout: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Controls:
    """What the per-request `x-sim-*` headers and the settings ask of one request."""

    fault: str | None
    latency_s: float
    adversarial: bool
    retry_after: float
    seed: int = 0


class Simulator:
    """An offline stand-in for the Anthropic Messages API. Thread-safe."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig.from_env()
        self.cache = PromptCache(self.config.clock)
        self.faults = FaultBook()
        self.limiter = RateLimiter(
            {
                "requests": self.config.requests_per_minute,
                "input-tokens": self.config.input_tokens_per_minute,
                "output-tokens": self.config.output_tokens_per_minute,
            },
            self.config.clock,
        )
        self.batches = BatchStore(self)
        # Latency and random faults are simulation, not security: a seeded PRNG is the point.
        self._rng = random.Random(self.config.seed)  # noqa: S311
        self._rng_lock = threading.Lock()

    # ----------------------------------------------------------------------------- dispatch
    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        query: Mapping[str, str] | None = None,
        base_url: str = "https://api.anthropic.com",
    ) -> SimResponse:
        headers = {k.lower(): v for k, v in headers.items()}
        request_id = "req_sim_" + uuid.uuid4().hex[:24]
        base = {"request-id": request_id, SIMULATOR_HEADER: "1"}
        try:
            if not (headers.get("x-api-key") or headers.get("authorization")):
                raise SimulatedAPIError("authentication_error", "x-api-key header is required")
            path = path.rstrip("/")
            if method == "POST" and path == "/v1/messages":
                return self._messages(headers, body, base)
            if method == "POST" and path == "/v1/messages/count_tokens":
                payload = self._count_tokens(_json_body(body))
                return _json(200, payload, base)
            if path.startswith("/v1/messages/batches"):
                status, result = self.batches.route(
                    method,
                    path,
                    _json_body(body) if method == "POST" and body else {},
                    query or {},
                    base_url,
                )
                if isinstance(result, bytes):
                    return SimResponse(
                        status, {**base, "content-type": "application/binary"}, result
                    )
                return _json(status, result, base)
            raise SimulatedAPIError("not_found_error", f"Not found: {method} {path}")
        except SimulatedAPIError as exc:
            return self._error(exc, base)
        except Exception:
            # A simulator bug must look like what it is (a 500 with a logged traceback), not
            # like a dropped connection the SDK would quietly retry.
            log.exception("simulator bug while answering %s %s", method, path)
            return self._error(SimulatedAPIError("api_error", "Internal server error"), base)

    def _error(self, exc: SimulatedAPIError, base: dict[str, str]) -> SimResponse:
        headers = {**base, **exc.headers}
        response = _json(exc.status, exc.body(base["request-id"]), headers)
        response.headers["x-should-retry"] = headers.get(
            "x-should-retry",
            "true" if exc.status in (408, 409, 429) or exc.status >= 500 else "false",
        )
        return response

    # ----------------------------------------------------------------------------- controls
    def _controls(self, headers: Mapping[str, str], body: bytes) -> Controls:
        fault = headers.get("x-sim-fault") or None
        if fault is not None and fault not in FAULTS:
            raise invalid(f"x-sim-fault: unknown simulator fault {fault!r}; known: {list(FAULTS)}")
        if fault is not None and "x-sim-fault-times" in headers:
            times = _int_header(headers, "x-sim-fault-times")
            key = (
                headers.get("x-sim-fault-key")
                or hashlib.sha256(fault.encode() + b"\0" + body).hexdigest()
            )
            if not self.faults.hits(f"{fault}:{key}", times):
                fault = None
        if fault is None and "x-sim-fault" not in headers:
            fault = self.faults.take_queued()
        seed = _seed_header(headers) if "x-sim-seed" in headers else self.config.seed
        with self._rng_lock:
            # Drawn as before, so seeded latencies stay what they were; the random fault is
            # decided per request below.
            self._rng.random()
            if self.config.random_faults:
                self._rng.choice(self.config.random_faults)
            gauss = self._rng.gauss(0.0, 1.0)
        if fault is None and "x-sim-fault" not in headers:
            fault = self._random_fault(headers, body, seed)
        if "x-sim-latency-ms" in headers:
            latency_s = _float_header(headers, "x-sim-latency-ms") / 1000.0
        elif self.config.latency_median_ms > 0:
            latency_s = (
                self.config.latency_median_ms * math.exp(self.config.latency_sigma * gauss) / 1000.0
            )
        else:
            latency_s = 0.0
        mode = headers.get("x-sim-mode") or self.config.mode
        if mode not in ("competent", "adversarial"):
            raise invalid(f"x-sim-mode: expected 'competent' or 'adversarial', got {mode!r}")
        retry_after = (
            _float_header(headers, "x-sim-retry-after")
            if "x-sim-retry-after" in headers
            else self.config.retry_after_s
        )
        return Controls(fault, latency_s, mode == "adversarial", retry_after, seed)

    def _random_fault(self, headers: Mapping[str, str], body: bytes, seed: int) -> str | None:
        """A transient fault at the configured (or `x-sim-fault-rate`) rate, or None.

        Decided by (seed, request body, attempt number): the n-th time this simulator sees the
        same request under the same seed, the outcome is always the same, so runs reproduce
        whatever else runs in parallel, and a retry (the SDK resends the same body) rolls again
        and can succeed.
        """
        rate = (
            _rate_header(headers, "x-sim-fault-rate")
            if "x-sim-fault-rate" in headers
            else self.config.fault_rate
        )
        if rate <= 0 or not self.config.random_faults:
            return None
        request = hashlib.sha256(str(seed).encode() + b"\0" + body).hexdigest()
        attempt = self.faults.attempt(request)
        if unit(request, attempt, "roll") >= rate:
            return None
        faults = self.config.random_faults
        return faults[int(unit(request, attempt, "pick") * len(faults))]

    # ----------------------------------------------------------------------------- messages
    def _messages(
        self, headers: Mapping[str, str], raw: bytes, base: dict[str, str]
    ) -> SimResponse:
        controls = self._controls(headers, raw)
        body = _json_body(raw)
        if controls.fault is not None:
            log.info("simulator fault %s (request %s)", controls.fault, base["request-id"])
        early = self._early_fault(controls, base)
        if early is not None:
            return early
        stream = bool(body.get("stream"))
        message, family = self.create_message(
            body,
            adversarial=controls.adversarial,
            malformed_tool_input=controls.fault == "malformed_tool_input",
            seed=controls.seed,
        )
        headers_out = {**base, **self.limiter.headers(family)}
        truncated = controls.fault == "truncated_stream"
        if not stream:
            self._sleep(controls.latency_s)
            payload = json.dumps(message).encode()
            if truncated:
                cut = payload[: len(payload) // 2]
                headers_out["content-type"] = "application/json"
                headers_out["content-length"] = str(len(payload))
                return SimResponse(200, headers_out, chunks=_cut_after([cut]))
            return _json(200, message, headers_out)
        headers_out["content-type"] = "text/event-stream; charset=utf-8"
        headers_out["cache-control"] = "no-cache"
        events = list(stream_events(message))
        if truncated:
            # Cut somewhere after message_start and before message_stop / message_delta.
            events = events[: max(2, len(events) - 3)]
        # Time to first token takes ~40% of the latency; the rest is spread over the events.
        self._sleep(controls.latency_s * 0.4)
        per_event = controls.latency_s * 0.6 / max(1, len(events))
        return SimResponse(200, headers_out, chunks=self._paced(events, per_event, cut=truncated))

    def _sleep(self, seconds: float) -> None:
        # time.sleep(0) still gives up the CPU; a zero-latency simulator must not.
        if seconds > 0:
            self.config.sleep(seconds)

    def _paced(self, events: list[bytes], delay: float, *, cut: bool) -> Iterator[bytes]:
        for event in events:
            self._sleep(delay)
            yield event
        if cut:
            raise StreamCut("peer closed connection without sending complete message body")

    def _early_fault(self, controls: Controls, base: dict[str, str]) -> SimResponse | None:
        fault = controls.fault
        retry = {"retry-after": _retry_after_text(controls.retry_after)}
        if fault in ("overloaded", "rate_limited", "spend_limit", "server_error", "bad_request"):
            self._sleep(min(controls.latency_s, 0.05))
        if fault == "overloaded":
            return self._error(
                SimulatedAPIError("overloaded_error", "Overloaded", headers=retry), base
            )
        if fault == "rate_limited":
            return self._error(
                SimulatedAPIError(
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization of 4,000 "
                    "requests per minute. Please try again later. (simulated)",
                    headers=retry,
                ),
                base,
            )
        if fault == "spend_limit":
            return self._error(
                SimulatedAPIError(
                    "rate_limit_error",
                    "You have reached your workspace spend limit. This workspace has exceeded "
                    "its spend limit for the month; raise the limit in the Console or wait "
                    "until the next month. (simulated)",
                    headers={"x-should-retry": "false"},
                ),
                base,
            )
        if fault == "server_error":
            return self._error(SimulatedAPIError("api_error", "Internal server error"), base)
        if fault == "bad_request":
            return self._error(
                invalid("messages: simulated bad request (x-sim-fault: bad_request)"), base
            )
        if fault == "timeout":
            return SimResponse(0, dict(base), timeout=True)
        return None

    def create_message(
        self,
        body: dict[str, Any],
        *,
        adversarial: bool = False,
        malformed_tool_input: bool = False,
        service_tier: str = "standard",
        seed: int | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Validate a Messages request and produce its message dict (no latency or faults).

        `seed` (default: the configured one) picks the sampled variant of the answer.
        """
        spec = rules.resolve_model(body, today=self.config.today)
        rules.check_messages_request(body, spec, count_only=False)
        segments = segments_of(body)
        probe = self.cache.account(
            model=spec.id,
            min_tokens=spec.cache_min_tokens,
            body=body,
            write=False,
            segments=segments,
        )
        _check_context(probe.total, spec)
        self.limiter.admit(
            spec.family, input_tokens=probe.input_tokens + probe.cache_creation_input_tokens
        )
        cache = self.cache.account(
            model=spec.id, min_tokens=spec.cache_min_tokens, body=body, segments=segments
        )
        reply = brain.respond(
            body,
            adversarial=adversarial,
            malformed_tool_input=malformed_tool_input,
            seed=self.config.seed if seed is None else seed,
        )
        content, stop_reason, stop_sequence = _apply_stop_sequences(
            reply.content, reply.stop_reason, body.get("stop_sequences") or []
        )
        content, stop_reason, output_tokens = _fit_to_max_tokens(
            content, stop_reason, int(body["max_tokens"])
        )
        if stop_reason == "max_tokens":
            stop_sequence = None
        self.limiter.settle(spec.family, output_tokens=output_tokens)
        usage = usage_dict(
            input_tokens=cache.input_tokens,
            output_tokens=output_tokens,
            cache_creation=cache.cache_creation_input_tokens,
            cache_read=cache.cache_read_input_tokens,
            creation_by_ttl=cache.creation_by_ttl,
            service_tier=service_tier,
        )
        message = message_dict(
            message_id="msg_sim_" + uuid.uuid4().hex[:24],
            model=spec.id,
            content=content,
            stop_reason=stop_reason,
            usage=usage,
            stop_sequence=stop_sequence,
        )
        return message, spec.family

    def _count_tokens(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = rules.resolve_model(body, today=self.config.today)
        rules.check_messages_request(body, spec, count_only=True)
        usage = self.cache.account(
            model=spec.id, min_tokens=spec.cache_min_tokens, body=body, write=False
        )
        return {"input_tokens": usage.total}


def _check_context(total: int, spec: ModelSpec) -> None:
    if total > spec.context_window:
        raise invalid(f"prompt is too long: {total} tokens > {spec.context_window} maximum")


def _block_tokens(block: dict[str, Any]) -> int:
    if block["type"] == "text":
        return count_text(block["text"])
    if block["type"] == "thinking":
        return count_text(block["thinking"]) + 8
    return count_text(block["name"]) + count_text(json.dumps(block["input"])) + 8


def _apply_stop_sequences(
    content: list[dict[str, Any]], stop_reason: str, stops: list[str]
) -> tuple[list[dict[str, Any]], str, str | None]:
    """End the reply where a text block first contains a stop sequence (not included)."""
    for index, block in enumerate(content):
        if block["type"] != "text":
            continue
        hits = [(block["text"].find(s), s) for s in stops if s and s in block["text"]]
        if hits:
            at, stop = min(hits)
            return [*content[:index], {**block, "text": block["text"][:at]}], "stop_sequence", stop
    return content, stop_reason, None


def _fit_to_max_tokens(
    content: list[dict[str, Any]], stop_reason: str, max_tokens: int
) -> tuple[list[dict[str, Any]], str, int]:
    """Cut the reply at max_tokens the way the API does (stop_reason "max_tokens")."""
    used = 0
    kept: list[dict[str, Any]] = []
    for block in content:
        cost = _block_tokens(block)
        if used + cost <= max_tokens:
            kept.append(block)
            used += cost
            continue
        room = max_tokens - used
        if block["type"] == "text" and room > 0:
            kept.append({**block, "text": block["text"][: room * 4]})
            used += count_text(kept[-1]["text"])
        return kept, "max_tokens", max(used, 1)
    return kept, stop_reason, max(used, 1)


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise invalid(f"There was an error parsing the body: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def _json(status: int, payload: Any, headers: Mapping[str, str]) -> SimResponse:
    return SimResponse(
        status, {**headers, "content-type": "application/json"}, json.dumps(payload).encode()
    )


def _cut_after(chunks: list[bytes]) -> Iterator[bytes]:
    yield from chunks
    raise StreamCut("peer closed connection without sending complete message body")


def _int_header(headers: Mapping[str, str], name: str) -> int:
    try:
        value = int(headers[name])
    except ValueError as exc:
        raise invalid(f"{name}: expected an integer, got {headers[name]!r}") from exc
    if value < 0:
        raise invalid(f"{name}: must not be negative")
    return value


def _float_header(headers: Mapping[str, str], name: str) -> float:
    try:
        value = float(headers[name])
    except ValueError as exc:
        raise invalid(f"{name}: expected a number, got {headers[name]!r}") from exc
    if value < 0 or not math.isfinite(value):
        raise invalid(f"{name}: must be a finite number >= 0")
    return value


def _seed_header(headers: Mapping[str, str]) -> int:
    try:
        return int(headers["x-sim-seed"])
    except ValueError as exc:
        raise invalid(f"x-sim-seed: expected an integer, got {headers['x-sim-seed']!r}") from exc


def _rate_header(headers: Mapping[str, str], name: str) -> float:
    value = _float_header(headers, name)
    if value > 1:
        raise invalid(f"{name}: must be between 0 and 1, got {headers[name]!r}")
    return value


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
