"""`complete()`: the one door every model call in Ledgerly goes through.

Every call belongs to a run: its CallContext (run, ticket, customer, deadline) is required, and
the run and customer budgets always apply. A call walks the fallback chain its caller chose
(`fallback`: "none" the requested tier only; "small" large → small; "static" large → small → a
static holding answer), and each step is: breaker admission → budget reservation (worst case,
atomic; may downgrade or refuse) → shared rate limiter → the SDK call (its own retries, under
GatewayTransport) → settle the budget and the limiter to the real usage → validate → record an
LLMCall row. What a step holds in Redis is held by one StepLease (ledgerly/llm/lease.py) and
given back in one place; every step is recorded by one CallRecorder (ledgerly/llm/recorder.py),
including the failed ones, the skipped ones and the static answer.

What the caller sees:
- a Completion (maybe `fallback=True`: another tier served; or `static=True`: every model step
  failed and the caller asked for fallback="static"; escalate);
- ModelUnavailable: every step its fallback allowed failed or was skipped (`.outcomes`);
- Defer(seconds): rate limited for longer than the wait cap; retry later (Celery countdown);
- BudgetExhausted: a budget (or the provider's spend limit) has no room; wait or escalate;
- ModelCallFailed: the request itself is wrong (400/401/403/404); retrying will not help;
- CalledInsideTransaction (a RuntimeError): called inside transaction.atomic, which would let a
  rollback erase the record of a paid call. Call models outside transactions.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import jsonschema
import redis
import structlog

from ledgerly.llm import metrics, prompt_registry, redis_state
from ledgerly.llm.breaker import CircuitBreaker, Verdict
from ledgerly.llm.budget import Budgets, Candidate, Limits, Refusal, Reservation
from ledgerly.llm.client import build_client
from ledgerly.llm.conf import GatewayConfig, config, model_family
from ledgerly.llm.context import FALLBACKS, CallContext, Fallback, Tier
from ledgerly.llm.errors import BudgetExhausted, Defer, ModelCallFailed, ModelUnavailable
from ledgerly.llm.guards import Guards
from ledgerly.llm.lease import StepLease
from ledgerly.llm.limiter import Permit, RateLimiter
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd, to_micro_usd, worst_case_micro_usd
from ledgerly.llm.recorder import CallRecorder
from ledgerly.llm.services import check_outside_transaction
from ledgerly.llm.transport import (
    DEADLINE_EXCEEDED_HEADER,
    DEADLINE_HEADER,
    DEFER_HEADER,
    SPEND_LIMIT_HEADER,
)

log = structlog.get_logger(__name__)

Outcome = LLMCall.Outcome

STATIC_REPLY = (
    "Thanks for your message. We could not prepare an answer right away, so a member of our "
    "support team will pick this up and reply to you here as soon as possible."
)
SIMULATOR_HEADER = "x-ledgerly-simulator"
REDIS_DOWN_DEFER_SECONDS = 15.0
# Below this much time left before the deadline a model call is not worth starting.
MIN_CALL_SECONDS = 0.05
# The API adds its own tool-use system prompt to every request with tools, billed as input but
# absent from the request body: 346 tokens on current models, up to 530 on older ones.
TOOL_USE_SYSTEM_TOKENS = 600
# An image is billed by its pixels, not by the length of its URL or file id: the API scales it
# to at most about 1.15 megapixels, about 1,600 tokens.
IMAGE_TOKENS = 1600


def fallback_chain(tier: Tier, fallback: Fallback) -> list[str]:
    """The tiers a call may be served by, in order (the static answer is not a tier)."""
    if tier not in ("small", "large"):
        raise ModelCallFailed(f"unknown tier {tier!r}: use 'small' or 'large'")
    if fallback not in FALLBACKS:
        raise ModelCallFailed(f"unknown fallback {fallback!r}: use one of {', '.join(FALLBACKS)}")
    if tier == "large" and fallback != "none":
        return ["large", "small"]
    return [tier]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    error: str | None = None  # set when `input` violates the tool's input_schema


@dataclass(frozen=True)
class Completion:
    text: str
    data: dict[str, Any] | None
    tool_calls: list[ToolCall]
    content: list[dict[str, Any]]
    stop_reason: str | None
    model: str  # exact model id; "" for the static answer
    tier: str  # the tier that served ("" for static)
    call_id: int  # LLMCall pk of the serving step (or of the static answer)
    cost_usd: Decimal
    usage: dict[str, int]
    fallback: bool
    static: bool
    simulated: bool
    prompt_ref: str = ""
    request_id: str = ""


def estimate_prompt_tokens(request: dict[str, Any]) -> int:
    """An upper estimate of the prompt's tokens, without a round trip: English runs ~4 characters
    a token, so a third of the request's JSON length (plus a margin) over-counts comfortably.
    Non-ASCII characters are escaped to six characters each (two tokens), which covers scripts
    that take a token or more per character. A request with tools also pays for the API's
    tool-use system prompt, which the body does not show, and an image its pixels, whatever
    the size of its reference. (A PDF `document` sent by URL or file id cannot be bounded from
    here; Ledgerly sends none.)"""
    size = len(json.dumps(request, separators=(",", ":")))
    overhead = TOOL_USE_SYSTEM_TOKENS if request.get("tools") else 0
    return size // 3 + 32 + overhead + IMAGE_TOKENS * _images(request.get("messages"))


def _images(value: object) -> int:
    """Image blocks anywhere in the messages (tool results can carry them too)."""
    if isinstance(value, list):
        return sum(_images(item) for item in value)
    if isinstance(value, dict):
        own = 1 if value.get("type") == "image" else 0
        return own + _images(value.get("content"))
    return 0


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(schema: dict[str, Any], instance: object) -> str | None:
    """None when `instance` satisfies `schema`, else the first error's message and path."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def parse_structured(
    schema: dict[str, Any] | None, text: str, stop_reason: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and re-validate a structured answer against `schema`; returns (data, error)."""
    if schema is None:
        return None, None
    if stop_reason == "max_tokens":
        return None, "structured output cut off at max_tokens"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"structured output is not JSON: {exc}"
    error = schema_errors(schema, data)
    if error is not None:
        return None, f"structured output violates its schema: {error}"
    return data if isinstance(data, dict) else {"value": data}, None


def tool_input_error(
    tools: Sequence[dict[str, Any]] | None, name: str, tool_input: object
) -> str | None:
    """None when a tool_use block names one of `tools` with input that fits its schema."""
    tool = next((t for t in tools or () if t.get("name") == name), None)
    if tool is None:
        return f"unknown tool {name!r}"
    schema = tool.get("input_schema")
    return None if schema is None else schema_errors(schema, tool_input)


def usage_of(message: Any) -> TokenUsage:
    """The token counts of an SDK Message."""
    return TokenUsage(
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        cache_creation_input_tokens=message.usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=message.usage.cache_read_input_tokens or 0,
    )


@dataclass
class _Call:
    """One complete() call's fixed inputs, shared by its steps."""

    ctx: CallContext
    tier: str
    purpose: str
    prompt: prompt_registry.Prompt
    request: dict[str, Any]
    max_tokens: int
    tools: Sequence[dict[str, Any]] | None
    output_schema: dict[str, Any] | None
    extra_headers: dict[str, str]
    prompt_tokens: int
    recorder: CallRecorder
    # Streaming: the text deltas go to on_text as they arrive; on_restart is called before an
    # attempt that follows one which had already sent text (a fallback model starts over).
    on_text: Callable[[str], None] | None = None
    on_restart: Callable[[], None] | None = None
    sent_text: bool = False

    def emit(self, text: str) -> None:
        """Pass a delta on; a failing callback is logged and dropped, never fails the call
        (what the call costs and records must not depend on a live view of it)."""
        if self.on_text is None or not text:
            return
        self.sent_text = True
        try:
            self.on_text(text)
        except Exception:
            log.exception("llm.on_text_failed", purpose=self.purpose)
            self.on_text = None

    def restart(self) -> None:
        if not self.sent_text:
            return
        self.sent_text = False
        if self.on_restart is not None:
            try:
                self.on_restart()
            except Exception:
                log.exception("llm.on_restart_failed", purpose=self.purpose)


class Gateway:
    """The per-process gateway: an SDK client plus the shared Redis guards."""

    def __init__(
        self,
        cfg: GatewayConfig | None = None,
        *,
        inner_transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.config = cfg or config()
        redis_client = redis_state.client()
        self.limiter = RateLimiter(redis_client, burst_seconds=self.config.rate_burst_seconds)
        self.client, self.simulated = build_client(
            self.config, inner=inner_transport, on_rate_headers=self._provider_limits
        )
        metrics.SIMULATED.set(1 if self.simulated else 0)
        self.breaker = CircuitBreaker(
            redis_client,
            failures=self.config.breaker_failures,
            window_seconds=self.config.breaker_window_seconds,
            cooldown_seconds=self.config.breaker_cooldown_seconds,
            probe_lease_seconds=self.config.call_timeout_seconds * (self.config.max_retries + 1)
            + 5,
        )
        self.budgets = Budgets(
            redis_client,
            Limits(
                run_tokens=self.config.run_budget_tokens,
                run_micro_usd=self.config.run_budget_micro_usd,
                customer_daily_micro_usd=self.config.customer_daily_micro_usd,
                daily_micro_usd=self.config.daily_micro_usd,
                monthly_micro_usd=self.config.monthly_micro_usd,
                downgrade_fraction=self.config.downgrade_fraction,
            ),
        )
        self.guards = Guards(
            redis_client, breaker=self.breaker, budgets=self.budgets, limiter=self.limiter
        )
        self._warned_at = 0.0

    # ------------------------------------------------------------------------------ request
    def build_request(
        self,
        *,
        prompt: prompt_registry.Prompt,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: Sequence[dict[str, Any]] | None,
        output_schema: dict[str, Any] | None,
        system_extra: str | None,
        thinking: bool = False,
    ) -> dict[str, Any]:
        """The Messages API body minus the model. Follows the current API rules: no sampling
        parameters, thinking adaptive or off, no assistant prefill, no forced tool choice; the
        static system prompt and the tool definitions carry cache_control (tools come first in
        the cached prefix, so a breakpoint on the last tool caches them all)."""
        if messages and messages[-1].get("role") == "assistant":
            raise ModelCallFailed("assistant prefill is not supported: end with a user turn")
        caching = self.config.prompt_caching
        system: list[dict[str, Any]] = [{"type": "text", "text": prompt.text}]
        if caching:
            system[0]["cache_control"] = {"type": "ephemeral"}
        if system_extra:
            system.append({"type": "text", "text": system_extra})
        request: dict[str, Any] = {"max_tokens": max_tokens, "system": system, "messages": messages}
        if tools:
            cached_tools = [dict(t) for t in tools]
            if caching:
                cached_tools[-1]["cache_control"] = {"type": "ephemeral"}
            request["tools"] = cached_tools
        if output_schema is not None:
            request["output_config"] = {"format": {"type": "json_schema", "schema": output_schema}}
        if thinking:
            request["thinking"] = {"type": "adaptive"}
        return request

    # ------------------------------------------------------------------------------ complete
    def complete(
        self,
        *,
        ctx: CallContext,
        tier: Tier,
        purpose: str,
        prompt: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        fallback: Fallback,
        tools: Sequence[dict[str, Any]] | None = None,
        output_schema: dict[str, Any] | None = None,
        system_extra: str | None = None,
        extra_headers: dict[str, str] | None = None,
        thinking: bool = False,
        on_text: Callable[[str], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> Completion:
        """Call the model for `tier` on behalf of `ctx`'s run (see the module docstring for the
        outcomes).

        Preconditions: no database transaction is open (CalledInsideTransaction otherwise);
        `prompt` names a prompt file of an installed app (ledgerly/llm/prompt_registry.py);
        `messages` is in the Messages API format and ends with a user turn. The call counts
        against ctx.run_id's and ctx.customer_ref's budgets and may not outlive
        ctx.deadline_at. `fallback` says how far it may fall back: only the static answer
        (fallback="static") ever gives a caller text no model wrote. `extra_headers` are sent
        with the request (the simulator's x-sim-* controls); `thinking=True` asks for adaptive
        thinking (its blocks stay in `content`, never in `text`; pass them back unchanged when
        continuing a tool-use turn).

        `on_text` streams the call: the request is sent with `stream: true` and each text delta
        is passed to `on_text` as the model writes it (from the gateway's thread; keep it
        quick). Budgets, limits, breaker, fallback, records and the returned Completion are the
        same as without it; a stream cut before its end is a failed step like a cut body (the
        provider may have charged, so its worst case stays reserved). When a step after one that
        already sent text serves (a fallback), `on_restart` is called first: drop the draft so
        far. The text the caller acts on is always the returned Completion's."""
        if not isinstance(ctx, CallContext):
            raise TypeError(f"ctx must be a CallContext, got {type(ctx).__name__}")
        chain = fallback_chain(tier, fallback)
        if max_tokens < 1:
            raise ModelCallFailed("max_tokens must be positive")
        limit = getattr(LLMCall._meta.get_field("purpose"), "max_length", None) or 0
        if len(purpose) > limit:
            # The call record could not hold it: refuse before the provider charges.
            raise ModelCallFailed(f"purpose must be at most {limit} characters")
        check_outside_transaction("llm.complete()")
        # A run's release pins the prompt version and the model id of each tier (ctx.pins).
        pins = ctx.pins
        loaded = prompt_registry.get(prompt, None if pins is None else pins.prompt_version(prompt))
        for each in chain:
            self.model_of(ctx, each)  # a pinned model without a price or a limit: refused here
        request = self.build_request(
            prompt=loaded,
            messages=messages,
            max_tokens=max_tokens,
            tools=tools,
            output_schema=output_schema,
            system_extra=system_extra,
            thinking=thinking,
        )
        call = _Call(
            ctx=ctx,
            tier=tier,
            purpose=purpose,
            prompt=loaded,
            request=request,
            max_tokens=max_tokens,
            tools=tools,
            output_schema=output_schema,
            extra_headers=dict(extra_headers or {}),
            prompt_tokens=estimate_prompt_tokens(request),
            recorder=CallRecorder(
                ctx=ctx, purpose=purpose, tier=tier, prompt=loaded, simulated=self.simulated
            ),
            on_text=on_text,
            on_restart=on_restart,
        )
        index = 0
        try:
            while index < len(chain):
                completion, index = self._step(call, chain, index)
                if completion is not None:
                    return completion
        except redis.RedisError as exc:
            # Without Redis no budget, limit or breaker can be enforced: fail closed, retry later.
            log.error("llm.redis_unavailable", error=str(exc), purpose=purpose)
            raise Defer(REDIS_DOWN_DEFER_SECONDS, "redis unavailable") from exc
        if fallback == "static":
            return self._static(call)
        recorder = call.recorder
        log.warning(
            "llm.model_unavailable",
            purpose=purpose,
            run_id=ctx.run_id,
            ticket_id=ctx.ticket_id,
            steps=recorder.outcomes(),
        )
        raise ModelUnavailable(
            recorder.outcomes(),
            f"{tier} call with fallback={fallback!r}: {recorder.summary()}",
            call_ids=[row.pk for row in recorder.steps],
        )

    # ------------------------------------------------------------------------------ one step
    def _step(self, call: _Call, chain: list[str], index: int) -> tuple[Completion | None, int]:
        """Try chain[index]; returns a completion, or None and the index of the next step.

        The common path (breaker closed, budget fits, limiter has room) costs one Redis round
        trip (ledgerly.llm.guards); every other path falls back to the separate scripts. What
        the step acquires is held by its lease, which gives back whatever is left on the way
        out, however the step ends."""
        step_tier = chain[index]
        model = self.model_of(call.ctx, step_tier)
        candidates = self._candidates(call, chain, index)
        with StepLease(self.guards, model=model, limits=self.config.limits_for(model)) as lease:
            fast = self.guards.admit(
                model=model,
                family=model_family(model),
                limits=lease.limits,
                candidates=candidates,
                run_id=call.ctx.run_id,
                customer_id=call.ctx.customer_ref,
                input_tokens=call.prompt_tokens,
                output_tokens=call.max_tokens,
            )
            budget = fast.budget
            if fast.breaker is not None:
                if fast.breaker.verdict is Verdict.OPEN:
                    self._record(call, step_tier, model, Outcome.CIRCUIT_OPEN, error="circuit open")
                    return None, index + 1
                lease.hold_probe(fast.breaker.token)  # the single probe lease for the model
                budget = self.budgets.reserve(
                    candidates, run_id=call.ctx.run_id, customer_id=call.ctx.customer_ref
                )
            lease.hold_reservation(self._check_budget(call, step_tier, model, budget))
            if fast.permit is not None:
                lease.hold_permit(fast.permit)

            reservation = lease.reservation
            if reservation is not None and reservation.index:
                # The budget had no room for this model (or global spend passed the downgrade
                # fraction): a later, cheaper step serves, after its own breaker check.
                log.warning(
                    "llm.budget_downgrade",
                    purpose=call.purpose,
                    from_model=model,
                    global_fraction=round(reservation.global_fraction, 4),
                )
                index += reservation.index
                step_tier, model = chain[index], self.model_of(call.ctx, chain[index])
                lease.move_to(model, self.config.limits_for(model))
                admission = self.breaker.admit(model)
                if admission.verdict is Verdict.OPEN:
                    self._record(call, step_tier, model, Outcome.CIRCUIT_OPEN, error="circuit open")
                    return None, index + 1
                if admission.verdict is Verdict.PROBE:
                    lease.hold_probe(admission.token)

            if lease.permit is None:
                try:
                    lease.hold_permit(self._acquire_rate(call, model))
                except Defer as defer:
                    self._record(call, step_tier, model, Outcome.DEFERRED, error=str(defer))
                    raise
            return self._call_model(call, chain, index, lease)

    def model_of(self, ctx: CallContext, tier: str) -> str:
        """The model id serving `tier` for `ctx`'s run: its release's pin, else the setting."""
        pins = ctx.pins
        pinned = None if pins is None else pins.model_for(tier)
        if pins is None or pinned is None:
            return self.config.models[tier]
        if pinned not in self.config.prices or model_family(pinned) not in self.config.rate_limits:
            raise ModelCallFailed(
                f"release {pins.release!r} pins {tier}={pinned!r}, which has no price or "
                "rate limit (LLM_PRICES_JSON, LLM_RATE_LIMITS_JSON)"
            )
        return pinned

    def _candidates(self, call: _Call, chain: list[str], index: int) -> list[Candidate]:
        """Worst cases of chain[index:], in order: the budget takes the first that fits."""
        return [
            Candidate(
                micro_usd=worst_case_micro_usd(
                    self.config.price(self.model_of(call.ctx, tier)),
                    prompt_tokens=call.prompt_tokens,
                    max_tokens=call.max_tokens,
                ),
                tokens=call.prompt_tokens + call.max_tokens,
                large=tier == "large",
            )
            for tier in chain[index:]
        ]

    def _check_budget(
        self, call: _Call, tier: str, model: str, outcome: Reservation | Refusal | None
    ) -> Reservation:
        """Pass a reservation on; on a refusal record it and raise BudgetExhausted."""
        if outcome is None:  # the combined script always answers on this path
            raise RuntimeError("budget reservation missing")
        self._budget_level(outcome.global_fraction)
        if isinstance(outcome, Reservation):
            return outcome
        metrics.BUDGET_THRESHOLD.labels("exhausted").inc()
        self._record(
            call, tier, model, Outcome.BUDGET_EXHAUSTED, error=f"no budget room: {outcome.scope}"
        )
        log.warning("llm.budget_refused", scope=outcome.scope, purpose=call.purpose)
        raise BudgetExhausted(outcome.scope)

    def _acquire_rate(self, call: _Call, model: str) -> Permit:
        """Wait for the shared limiter, up to the retry-after cap and the deadline; a longer
        wait becomes Defer."""
        limits = self.config.limits_for(model)
        family = model_family(model)
        waited = 0.0
        while True:
            permit, wait = self.limiter.try_acquire(
                family, limits, input_tokens=call.prompt_tokens, output_tokens=call.max_tokens
            )
            if permit is not None:
                return permit
            if waited + wait > self.config.retry_after_cap_seconds or (
                wait > call.ctx.seconds_left()
            ):
                raise Defer(wait, f"rate limit for {family}")
            time.sleep(wait)
            waited += wait

    def _call_model(
        self, call: _Call, chain: list[str], index: int, lease: StepLease
    ) -> tuple[Completion | None, int]:
        step_tier, model = chain[index], lease.model
        headers = dict(call.extra_headers)
        # The deadline is wall-clock time (it may come from a checkpoint written elsewhere); the
        # transport cuts attempts on this process's monotonic clock, derived from it here.
        left = call.ctx.seconds_left()
        deadline = time.monotonic() + left
        timeout = min(self.config.call_timeout_seconds, left)
        headers[DEADLINE_HEADER] = repr(deadline)
        if timeout < MIN_CALL_SECONDS:
            self._record(call, step_tier, model, Outcome.DEADLINE, error="no time left")
            return None, len(chain)

        started = time.perf_counter()
        raw: _Sent | None = None
        try:
            if call.on_text is None:
                plain = self.client.messages.with_raw_response.create(
                    model=model, **call.request, timeout=timeout, extra_headers=headers
                )
                raw = _Sent(plain.headers, plain.retries_taken + 1)
                message = plain.parse()
            else:
                message, raw = self._stream(call, model, timeout, headers)
        except anthropic.APIStatusError as exc:
            # An error answer is not billed: the reservation and estimates go back.
            lease.release_budget()
            latency = time.perf_counter() - started
            return self._status_failure(call, chain, index, lease, exc, latency)
        except anthropic.APIConnectionError as exc:  # includes timeouts, after the SDK's retries
            lease.release_budget()
            return self._broken_off(
                call,
                chain,
                index,
                lease,
                latency=time.perf_counter() - started,
                attempts=_attempts(exc.request),
                at_deadline=isinstance(exc, anthropic.APITimeoutError)
                and time.monotonic() >= deadline - MIN_CALL_SECONDS,
                error=f"{type(exc).__name__}: {exc}",
                deadline_error=f"{type(exc).__name__} at the deadline: {exc}",
            )
        except (anthropic.APIResponseValidationError, ValueError) as exc:
            # A 2xx that is not the API's answer (a broken proxy, a cut body): an outage of
            # this model as far as the breaker goes. The provider may have charged for it, so
            # the worst case stays reserved (never given back) and the permit stays taken.
            lease.keep_spent()
            latency = time.perf_counter() - started
            lease.record_failure()
            self._record(
                call,
                step_tier,
                model,
                Outcome.FAILED,
                latency=latency,
                attempts=1 if raw is None else raw.attempts,
                request_id="" if raw is None else raw.headers.get("request-id", ""),
                error=f"unreadable response: {type(exc).__name__}: {exc}",
            )
            return None, index + 1
        except httpx2.TransportError as exc:
            # Only a stream gets here: the SDK wraps errors before the response began, so this
            # one broke off mid-body (connection cut, read timeout). The provider may have
            # charged for what it generated: as for a cut body, the worst case stays reserved.
            lease.keep_spent()
            return self._broken_off(
                call,
                chain,
                index,
                lease,
                latency=time.perf_counter() - started,
                attempts=_attempts(exc.request if _has_request(exc) else None),
                at_deadline=isinstance(exc, httpx2.TimeoutException)
                and time.monotonic() >= deadline - MIN_CALL_SECONDS,
                error=f"stream cut: {type(exc).__name__}: {exc}",
                deadline_error=f"stream cut at the deadline: {type(exc).__name__}: {exc}",
            )

        latency = time.perf_counter() - started
        usage = usage_of(message)
        cost = cost_usd(self.config.price(model), usage)
        fraction = lease.settle(
            micro_usd=to_micro_usd(cost),
            tokens=usage.prompt_tokens + usage.output_tokens,
            input_tokens=usage.input_tokens + usage.cache_creation_input_tokens,
            output_tokens=usage.output_tokens,
        )
        if fraction is not None:
            self._budget_level(fraction)

        content = [_block_dict(block) for block in message.content]
        text = "".join(b["text"] for b in content if b.get("type") == "text")
        tool_calls = [
            ToolCall(
                id=b["id"],
                name=b["name"],
                input=b.get("input") or {},
                error=tool_input_error(call.tools, b["name"], b.get("input")),
            )
            for b in content
            if b.get("type") == "tool_use"
        ]
        data, invalid = parse_structured(call.output_schema, text, message.stop_reason)
        simulated = raw.headers.get(SIMULATOR_HEADER) == "1"
        record = self._record(
            call,
            step_tier,
            model,
            Outcome.INVALID_OUTPUT if invalid else Outcome.OK,
            usage=usage,
            cost=cost,
            latency=latency,
            attempts=raw.attempts,
            simulated=simulated,
            request_id=raw.headers.get("request-id", ""),
            stop_reason=message.stop_reason or "",
            error=invalid or "",
        )
        if invalid:
            log.warning("llm.invalid_output", model=model, purpose=call.purpose, error=invalid)
            return None, index + 1
        return (
            Completion(
                text=text,
                data=data,
                tool_calls=tool_calls,
                content=content,
                stop_reason=message.stop_reason,
                model=model,
                tier=step_tier,
                call_id=record.pk,
                cost_usd=cost,
                usage=usage.as_dict(),
                fallback=record.fallback,
                static=False,
                simulated=simulated,
                prompt_ref=call.prompt.ref,
                request_id=record.request_id,
            ),
            index,
        )

    def _broken_off(
        self,
        call: _Call,
        chain: list[str],
        index: int,
        lease: StepLease,
        *,
        latency: float,
        attempts: int,
        at_deadline: bool,
        error: str,
        deadline_error: str,
    ) -> tuple[Completion | None, int]:
        """Record a call that broke off (no answer, or a stream cut midway). Cut short by the
        run's own deadline it ends the chain without counting against the model's health: many
        runs near their deadlines must not open the breaker for every worker. Otherwise it is
        a failure of this model and the next step of the chain may serve."""
        step_tier, model = chain[index], lease.model
        if at_deadline:
            self._record(
                call,
                step_tier,
                model,
                Outcome.DEADLINE,
                latency=latency,
                attempts=attempts,
                error=deadline_error,
            )
            return None, len(chain)
        lease.record_failure()
        self._record(
            call, step_tier, model, Outcome.FAILED, latency=latency, attempts=attempts, error=error
        )
        return None, index + 1

    def _stream(
        self, call: _Call, model: str, timeout: float, headers: dict[str, str]
    ) -> tuple[Any, _Sent]:
        """Send the request streamed, passing text deltas on; the assembled message."""
        call.restart()
        with self.client.messages.stream(
            model=model, **call.request, timeout=timeout, extra_headers=headers
        ) as stream:
            sent = _Sent(stream.response.headers, _attempts(stream.response.request))
            for text in stream.text_stream:
                call.emit(text)
            try:
                return stream.get_final_message(), sent
            except AssertionError:
                # The SDK asserts when a 2xx body held no message_start (a proxy answering
                # JSON, or nothing, to a streamed request): an unreadable response, as below.
                raise ValueError("the streamed response held no message") from None

    def _status_failure(
        self,
        call: _Call,
        chain: list[str],
        index: int,
        lease: StepLease,
        exc: anthropic.APIStatusError,
        latency: float,
    ) -> tuple[Completion | None, int]:
        """An error answer after the SDK's retries. The probe, if held, goes back with the
        lease unless the error is an outage of the model (then the breaker counts it)."""
        step_tier, model = chain[index], lease.model
        headers = exc.response.headers
        common: dict[str, Any] = {
            "latency": latency,
            "attempts": _attempts(exc.response.request),
            "simulated": headers.get(SIMULATOR_HEADER) == "1",
            "request_id": headers.get("request-id", ""),
            "error": f"{exc.status_code}: {exc.message}",
        }
        if DEFER_HEADER in headers:
            seconds = float(headers[DEFER_HEADER])
            self._record(call, step_tier, model, Outcome.DEFERRED, **common)
            raise Defer(seconds, f"{exc.status_code} from {model}") from exc
        if SPEND_LIMIT_HEADER in headers:
            self._record(call, step_tier, model, Outcome.BUDGET_EXHAUSTED, **common)
            raise BudgetExhausted("provider_spend_limit", str(exc)) from exc
        if headers.get(DEADLINE_EXCEEDED_HEADER) == "exceeded":
            self._record(call, step_tier, model, Outcome.DEADLINE, **common)
            return None, len(chain)
        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
            # Retryable, and the SDK's retries ran out: try the next step. Being rate limited
            # says nothing about the model's health, so only the others count for the breaker.
            if exc.status_code != 429:
                lease.record_failure()
            self._record(call, step_tier, model, Outcome.FAILED, **common)
            return None, index + 1
        self._record(call, step_tier, model, Outcome.BAD_REQUEST, **common)
        raise ModelCallFailed(
            f"{model} refused the request: {exc.status_code} {exc.message}"
        ) from exc

    # ------------------------------------------------------------------------------ helpers
    def _budget_level(self, fraction: float) -> None:
        metrics.BUDGET_USED.set(fraction)
        if fraction < self.config.warn_fraction:
            return
        level = "downgrade" if fraction >= self.config.downgrade_fraction else "warn"
        metrics.BUDGET_THRESHOLD.labels(level).inc()
        now = time.monotonic()
        if now - self._warned_at > 60:  # a warning a minute per process is enough to act on
            self._warned_at = now
            log.warning("llm.global_budget_high", used_fraction=round(fraction, 4), level=level)

    def _provider_limits(self, model: str, remaining: dict[str, tuple[int, float] | None]) -> None:
        self.limiter.observe(model_family(model), self.config.limits_for(model), remaining)

    @staticmethod
    def _record(call: _Call, served_tier: str, model: str, outcome: str, **fields: Any) -> LLMCall:
        return call.recorder.record(served_tier, model, outcome, **fields)

    def _static(self, call: _Call) -> Completion:
        steps = call.recorder.outcomes()
        record = self._record(call, "", "", Outcome.STATIC, error="every model step failed")
        log.error(
            "llm.static_answer", purpose=call.purpose, ticket_id=call.ctx.ticket_id, steps=steps
        )
        return Completion(
            text=STATIC_REPLY,
            data=None,
            tool_calls=[],
            content=[{"type": "text", "text": STATIC_REPLY}],
            stop_reason=None,
            model="",
            tier="",
            call_id=record.pk,
            cost_usd=Decimal(0),
            usage=TokenUsage().as_dict(),
            fallback=True,
            static=True,
            simulated=self.simulated,
            prompt_ref=call.prompt.ref,
        )


@dataclass(frozen=True, slots=True)
class _Sent:
    """What the gateway keeps of a response besides the message: headers and attempts."""

    headers: httpx2.Headers
    attempts: int


def _block_dict(block: Any) -> dict[str, Any]:
    data: dict[str, Any] = block.to_dict(mode="json")
    # A streamed message is a ParsedMessage; its text blocks carry a parsed_output slot that a
    # plain message's do not. Content is passed back to the API verbatim, so drop it.
    data.pop("parsed_output", None)
    return data


def _has_request(exc: httpx2.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 (httpx raises RuntimeError when the error has no request)
    except RuntimeError:
        return False
    return True


def _attempts(request: httpx2.Request | None) -> int:
    """HTTP attempts the SDK made: it numbers each retry in x-stainless-retry-count."""
    try:
        return int(request.headers.get("x-stainless-retry-count", "0")) + 1  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return 1


# ---------------------------------------------------------------------------------- process
_lock = threading.Lock()
_gateway: Gateway | None = None
_gateway_pid: int | None = None


def get_gateway() -> Gateway:
    """This process's gateway (rebuilt after a fork: SDK clients must not cross processes)."""
    global _gateway, _gateway_pid
    gateway = _gateway
    if gateway is not None and _gateway_pid == os.getpid():
        return gateway
    with _lock:
        if _gateway is None or _gateway_pid != os.getpid():
            _gateway, _gateway_pid = Gateway(), os.getpid()
        return _gateway


def install(gateway: Gateway | None) -> None:
    """Use `gateway` for this process's calls (tests and benchmarks); None: build from settings."""
    global _gateway, _gateway_pid
    with _lock:
        _gateway, _gateway_pid = gateway, os.getpid() if gateway else None


def reset() -> None:
    redis_state.reset()
    install(None)


def backend_description() -> dict[str, object]:
    """What answers model calls, for the UI and health pages: says plainly when it is the
    simulator."""
    cfg = config()
    simulated = cfg.backend != "anthropic"
    return {
        "backend": "simulator" if simulated else "anthropic",
        "simulated": simulated,
        "label": "Offline simulator (not Claude)" if simulated else "Claude (Anthropic API)",
        "models": dict(cfg.models),
    }


def complete(
    *,
    ctx: CallContext,
    tier: Tier,
    purpose: str,
    prompt: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    fallback: Fallback,
    tools: Sequence[dict[str, Any]] | None = None,
    output_schema: dict[str, Any] | None = None,
    system_extra: str | None = None,
    extra_headers: dict[str, str] | None = None,
    thinking: bool = False,
    on_text: Callable[[str], None] | None = None,
    on_restart: Callable[[], None] | None = None,
) -> Completion:
    """Call a model through this process's gateway; see Gateway.complete."""
    return get_gateway().complete(
        ctx=ctx,
        tier=tier,
        purpose=purpose,
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        fallback=fallback,
        tools=tools,
        output_schema=output_schema,
        system_extra=system_extra,
        extra_headers=extra_headers,
        thinking=thinking,
        on_text=on_text,
        on_restart=on_restart,
    )
