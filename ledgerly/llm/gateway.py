"""`complete()`: the one door every model call in Ledgerly goes through.

A call walks a fallback chain — large → small → a static holding answer — and each step is:
breaker admission → budget reservation (worst case, atomic; may downgrade or refuse) → shared
rate limiter → the SDK call (its own retries, under GatewayTransport) → settle the budget and the
limiter to the real usage → validate → record an LLMCall row. Every step is recorded, including
the failed ones, the skipped ones and the static answer.

What the caller sees:
- a Completion (maybe `fallback=True`, or `static=True`: every model step failed; escalate);
- Defer(seconds): rate limited for longer than the wait cap; retry later (Celery countdown);
- BudgetExhausted: a budget (or the provider's spend limit) has no room; wait or escalate;
- ModelCallFailed: the request itself is wrong (400/401/403/404); retrying will not help.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import anthropic
import httpx2
import jsonschema
import redis
import structlog

from ledgerly.llm import metrics, prompt_registry, redis_state
from ledgerly.llm.breaker import CircuitBreaker, Verdict
from ledgerly.llm.budget import Budgets, Candidate, Limits, Refusal, Reservation
from ledgerly.llm.client import build_client
from ledgerly.llm.conf import GatewayConfig, RateLimits, config, model_family
from ledgerly.llm.errors import BudgetExhausted, Defer, ModelCallFailed
from ledgerly.llm.guards import Guards
from ledgerly.llm.limiter import Permit, RateLimiter
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd, to_micro_usd, worst_case_micro_usd
from ledgerly.llm.services import llm_call_save
from ledgerly.llm.transport import (
    DEADLINE_EXCEEDED_HEADER,
    DEADLINE_HEADER,
    DEFER_HEADER,
    SPEND_LIMIT_HEADER,
)

log = structlog.get_logger(__name__)

Tier = Literal["small", "large"]
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
# Labels recorded on every LLMCall row: longer ones are refused before anything is spent.
RECORDED_LABELS = ("purpose", "ticket_id", "run_id", "customer_id")


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


@dataclass
class _Call:
    """One complete() call's fixed inputs, shared by its steps."""

    tier: str
    purpose: str
    prompt: prompt_registry.Prompt
    request: dict[str, Any]
    max_tokens: int
    ticket_id: str
    run_id: str
    customer_id: str
    run_key: object
    customer_key: object
    tools: Sequence[dict[str, Any]] | None
    output_schema: dict[str, Any] | None
    deadline: float | None
    extra_headers: dict[str, str]
    prompt_tokens: int
    steps: list[LLMCall] = field(default_factory=list)


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
        system: list[dict[str, Any]] = [
            {"type": "text", "text": prompt.text, "cache_control": {"type": "ephemeral"}}
        ]
        if system_extra:
            system.append({"type": "text", "text": system_extra})
        request: dict[str, Any] = {"max_tokens": max_tokens, "system": system, "messages": messages}
        if tools:
            cached_tools = [dict(t) for t in tools]
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
        tier: Tier,
        purpose: str,
        prompt: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        ticket_id: object = None,
        run_id: object = None,
        customer_id: object = None,
        tools: Sequence[dict[str, Any]] | None = None,
        output_schema: dict[str, Any] | None = None,
        deadline: float | None = None,
        system_extra: str | None = None,
        extra_headers: dict[str, str] | None = None,
        thinking: bool = False,
    ) -> Completion:
        """Call the model for `tier` (see the module docstring for the outcomes).

        Preconditions: `prompt` names a file in ledgerly/llm/prompts; `messages` is in the
        Messages API format and ends with a user turn; `deadline` is a time.monotonic() value.
        `extra_headers` are sent with the request (the simulator's x-sim-* controls);
        `thinking=True` asks for adaptive thinking (its blocks stay in `content`, never in
        `text`; pass them back unchanged when continuing a tool-use turn)."""
        if tier not in ("small", "large"):
            raise ModelCallFailed(f"unknown tier {tier!r}: use 'small' or 'large'")
        if max_tokens < 1:
            raise ModelCallFailed("max_tokens must be positive")
        labels = {
            "purpose": purpose,
            "ticket_id": ticket_id,
            "run_id": run_id,
            "customer_id": customer_id,
        }
        for name in RECORDED_LABELS:
            limit = getattr(LLMCall._meta.get_field(name), "max_length", None) or 0
            if labels[name] is not None and len(str(labels[name])) > limit:
                # The call record could not hold it: refuse before the provider charges.
                raise ModelCallFailed(f"{name} must be at most {limit} characters")
        loaded = prompt_registry.get(prompt)
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
            tier=tier,
            purpose=purpose,
            prompt=loaded,
            request=request,
            max_tokens=max_tokens,
            ticket_id="" if ticket_id is None else str(ticket_id),
            run_id="" if run_id is None else str(run_id),
            customer_id="" if customer_id is None else str(customer_id),
            run_key=run_id,
            customer_key=customer_id,
            tools=tools,
            output_schema=output_schema,
            deadline=deadline,
            extra_headers=dict(extra_headers or {}),
            prompt_tokens=estimate_prompt_tokens(request),
        )
        chain: list[str] = ["large", "small"] if tier == "large" else ["small"]
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
        return self._static(call)

    # ------------------------------------------------------------------------------ one step
    def _step(self, call: _Call, chain: list[str], index: int) -> tuple[Completion | None, int]:
        """Try chain[index]; returns a completion, or None and the index of the next step.

        The common path (breaker closed, budget fits, limiter has room) costs one Redis round
        trip (ledgerly.llm.guards); every other path falls back to the separate scripts."""
        step_tier = chain[index]
        model = self.config.models[step_tier]
        candidates = self._candidates(call, chain, index)
        fast = self.guards.admit(
            model=model,
            family=model_family(model),
            limits=self.config.limits_for(model),
            candidates=candidates,
            run_id=call.run_key,
            customer_id=call.customer_key,
            input_tokens=call.prompt_tokens,
            output_tokens=call.max_tokens,
        )
        probe = False
        budget = fast.budget
        if fast.breaker is not None:
            if fast.breaker.verdict is Verdict.OPEN:
                self._record(call, step_tier, model, Outcome.CIRCUIT_OPEN, error="circuit open")
                return None, index + 1
            probe = True  # this caller holds the single probe lease for the model
            budget = self.budgets.reserve(
                candidates, run_id=call.run_key, customer_id=call.customer_key
            )
        reservation = self._check_budget(call, chain[index], model, probe, budget)
        permit = fast.permit

        if reservation.index:
            # The budget had no room for this model (or global spend passed the downgrade
            # fraction): a later, cheaper step serves, after its own breaker check.
            if probe:
                self.breaker.release_probe(model)
            log.warning(
                "llm.budget_downgrade",
                purpose=call.purpose,
                from_model=model,
                global_fraction=round(reservation.global_fraction, 4),
            )
            index += reservation.index
            step_tier, model = chain[index], self.config.models[chain[index]]
            admission = self.breaker.admit(model)
            if admission.verdict is Verdict.OPEN:
                self.budgets.settle(reservation, micro_usd=0, tokens=0)
                self._record(call, step_tier, model, Outcome.CIRCUIT_OPEN, error="circuit open")
                return None, index + 1
            probe = admission.verdict is Verdict.PROBE
            permit = None

        if permit is None:
            try:
                permit = self._acquire_rate(call, model)
            except Defer as defer:
                self.budgets.settle(reservation, micro_usd=0, tokens=0)
                if probe:
                    self.breaker.release_probe(model)
                self._record(call, step_tier, model, Outcome.DEFERRED, error=str(defer))
                raise
        return self._call_model(call, chain, index, model, reservation, permit, probe)

    def _candidates(self, call: _Call, chain: list[str], index: int) -> list[Candidate]:
        """Worst cases of chain[index:], in order: the budget takes the first that fits."""
        return [
            Candidate(
                micro_usd=worst_case_micro_usd(
                    self.config.price(self.config.models[tier]),
                    prompt_tokens=call.prompt_tokens,
                    max_tokens=call.max_tokens,
                ),
                tokens=call.prompt_tokens + call.max_tokens,
                large=tier == "large",
            )
            for tier in chain[index:]
        ]

    def _check_budget(
        self,
        call: _Call,
        tier: str,
        model: str,
        probe: bool,
        outcome: Reservation | Refusal | None,
    ) -> Reservation:
        """Pass a reservation on; on a refusal record it and raise BudgetExhausted."""
        if outcome is None:  # the combined script always answers on this path
            raise RuntimeError("budget reservation missing")
        self._budget_level(outcome.global_fraction)
        if isinstance(outcome, Reservation):
            return outcome
        if probe:
            self.breaker.release_probe(model)
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
            left = None if call.deadline is None else call.deadline - time.monotonic()
            if waited + wait > self.config.retry_after_cap_seconds or (
                left is not None and wait > left
            ):
                raise Defer(wait, f"rate limit for {family}")
            time.sleep(wait)
            waited += wait

    def _call_model(
        self,
        call: _Call,
        chain: list[str],
        index: int,
        model: str,
        reservation: Reservation,
        permit: Permit,
        probe: bool,
    ) -> tuple[Completion | None, int]:
        step_tier = chain[index]
        limits = self.config.limits_for(model)
        timeout = self.config.call_timeout_seconds
        headers = dict(call.extra_headers)
        if call.deadline is not None:
            left = call.deadline - time.monotonic()
            timeout = min(timeout, left)
            headers[DEADLINE_HEADER] = repr(call.deadline)
        if timeout < MIN_CALL_SECONDS:
            self._release(reservation, permit, limits)
            if probe:
                self.breaker.release_probe(model)
            self._record(call, step_tier, model, Outcome.DEADLINE, error="no time left")
            return None, len(chain)

        started = time.perf_counter()
        raw = None
        try:
            raw = self.client.messages.with_raw_response.create(
                model=model, **call.request, timeout=timeout, extra_headers=headers
            )
            message = raw.parse()
        except anthropic.APIStatusError as exc:
            latency = time.perf_counter() - started
            self._release(reservation, permit, limits)
            return self._status_failure(call, chain, index, model, exc, latency, probe)
        except anthropic.APIConnectionError as exc:  # includes timeouts, after the SDK's retries
            latency = time.perf_counter() - started
            self._release(reservation, permit, limits)
            if (
                isinstance(exc, anthropic.APITimeoutError)
                and call.deadline is not None
                and time.monotonic() >= call.deadline - MIN_CALL_SECONDS
            ):
                # Cut short by the run's own deadline, not by the model's health: many runs
                # near their deadlines must not open the breaker for every worker.
                self._give_back_probe(model, probe)
                self._record(
                    call,
                    step_tier,
                    model,
                    Outcome.DEADLINE,
                    latency=latency,
                    attempts=_attempts(exc.request),
                    error=f"{type(exc).__name__} at the deadline: {exc}",
                )
                return None, len(chain)
            self._breaker_failure(model, probe)
            self._record(
                call,
                step_tier,
                model,
                Outcome.FAILED,
                latency=latency,
                attempts=_attempts(exc.request),
                error=f"{type(exc).__name__}: {exc}",
            )
            return None, index + 1
        except (anthropic.APIResponseValidationError, ValueError) as exc:
            # A 2xx that is not the API's answer (a broken proxy, a cut body): an outage of
            # this model as far as the breaker goes. The provider may have charged for it, so
            # the worst case stays reserved (never given back) and the permit stays taken.
            latency = time.perf_counter() - started
            self._breaker_failure(model, probe)
            self._record(
                call,
                step_tier,
                model,
                Outcome.FAILED,
                latency=latency,
                attempts=1 if raw is None else raw.retries_taken + 1,
                request_id="" if raw is None else raw.headers.get("request-id", ""),
                error=f"unreadable response: {type(exc).__name__}: {exc}"[:2000],
            )
            return None, index + 1

        latency = time.perf_counter() - started
        usage = TokenUsage(
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            cache_creation_input_tokens=message.usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=message.usage.cache_read_input_tokens or 0,
        )
        cost = cost_usd(self.config.price(model), usage)
        fraction = reservation.global_fraction
        with _after_the_call("settle", model):
            fraction = self.guards.settle(
                reservation,
                permit,
                limits,
                micro_usd=to_micro_usd(cost),
                tokens=usage.prompt_tokens + usage.output_tokens,
                input_tokens=usage.input_tokens + usage.cache_creation_input_tokens,
                output_tokens=usage.output_tokens,
            )
        self._budget_level(fraction)
        with _after_the_call("breaker_success", model):
            self.breaker.record_success(model, probe=probe)

        content = [block.to_dict(mode="json") for block in message.content]
        text = "".join(b["text"] for b in content if b.get("type") == "text")
        tool_calls = [
            ToolCall(
                id=b["id"],
                name=b["name"],
                input=b.get("input") or {},
                error=self._tool_input_error(call.tools, b["name"], b.get("input")),
            )
            for b in content
            if b.get("type") == "tool_use"
        ]
        data, invalid = self._structured(call.output_schema, text, message.stop_reason)
        simulated = raw.headers.get(SIMULATOR_HEADER) == "1"
        record = self._record(
            call,
            step_tier,
            model,
            Outcome.INVALID_OUTPUT if invalid else Outcome.OK,
            usage=usage,
            cost=cost,
            latency=latency,
            attempts=raw.retries_taken + 1,
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

    def _status_failure(
        self,
        call: _Call,
        chain: list[str],
        index: int,
        model: str,
        exc: anthropic.APIStatusError,
        latency: float,
        probe: bool,
    ) -> tuple[Completion | None, int]:
        step_tier = chain[index]
        headers = exc.response.headers
        attempts = _attempts(exc.response.request)
        common: dict[str, Any] = {
            "latency": latency,
            "attempts": attempts,
            "simulated": headers.get(SIMULATOR_HEADER) == "1",
            "request_id": headers.get("request-id", ""),
            "error": f"{exc.status_code}: {exc.message}"[:2000],
        }
        if DEFER_HEADER in headers:
            self._give_back_probe(model, probe)
            seconds = float(headers[DEFER_HEADER])
            self._record(call, step_tier, model, Outcome.DEFERRED, **common)
            raise Defer(seconds, f"{exc.status_code} from {model}") from exc
        if SPEND_LIMIT_HEADER in headers:
            self._give_back_probe(model, probe)
            self._record(call, step_tier, model, Outcome.BUDGET_EXHAUSTED, **common)
            raise BudgetExhausted("provider_spend_limit", str(exc)) from exc
        if headers.get(DEADLINE_EXCEEDED_HEADER) == "exceeded":
            self._give_back_probe(model, probe)
            self._record(call, step_tier, model, Outcome.DEADLINE, **common)
            return None, len(chain)
        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
            # Retryable, and the SDK's retries ran out: try the next step. Being rate limited
            # says nothing about the model's health, so only the others count for the breaker.
            if exc.status_code == 429:
                self._give_back_probe(model, probe)
            else:
                self._breaker_failure(model, probe)
            self._record(call, step_tier, model, Outcome.FAILED, **common)
            return None, index + 1
        self._give_back_probe(model, probe)
        self._record(call, step_tier, model, Outcome.BAD_REQUEST, **common)
        raise ModelCallFailed(
            f"{model} refused the request: {exc.status_code} {exc.message}"
        ) from exc

    # ------------------------------------------------------------------------------ helpers
    def _release(self, reservation: Reservation, permit: Permit, limits: RateLimits) -> None:
        """Nothing was charged: give back the budget reservation and the token estimates."""
        with _after_the_call("release", permit.family):
            self.guards.settle(
                reservation, permit, limits, micro_usd=0, tokens=0, input_tokens=0, output_tokens=0
            )

    def _structured(
        self, schema: dict[str, Any] | None, text: str, stop_reason: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Parse and re-validate a structured answer; returns (data, error)."""
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

    @staticmethod
    def _tool_input_error(
        tools: Sequence[dict[str, Any]] | None, name: str, tool_input: object
    ) -> str | None:
        tool = next((t for t in tools or () if t.get("name") == name), None)
        if tool is None:
            return f"unknown tool {name!r}"
        schema = tool.get("input_schema")
        return None if schema is None else schema_errors(schema, tool_input)

    def _give_back_probe(self, model: str, probe: bool) -> None:
        if probe:
            with _after_the_call("release_probe", model):
                self.breaker.release_probe(model)

    def _breaker_failure(self, model: str, probe: bool) -> None:
        result = "unknown"
        with _after_the_call("breaker_failure", model):
            result = self.breaker.record_failure(model, probe=probe)
        if result in ("opened", "reopened"):
            metrics.BREAKER_OPENED.labels(model).inc()
            log.error("llm.breaker_opened", model=model, how=result)

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

    def _record(
        self,
        call: _Call,
        served_tier: str,
        model: str,
        outcome: str,
        *,
        usage: TokenUsage | None = None,
        cost: Decimal | None = None,
        latency: float = 0.0,
        attempts: int = 0,
        simulated: bool | None = None,
        request_id: str = "",
        stop_reason: str = "",
        error: str = "",
    ) -> LLMCall:
        usage = usage or TokenUsage()
        row = LLMCall(
            ticket_id=call.ticket_id,
            run_id=call.run_id,
            customer_id=call.customer_id,
            purpose=call.purpose,
            tier=call.tier,
            served_tier=served_tier,
            model=model,
            prompt_name=call.prompt.name,
            prompt_version=call.prompt.version,
            prompt_hash=call.prompt.sha256,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cost_usd=cost or Decimal(0),
            latency_ms=round(latency * 1000),
            attempts=attempts,
            outcome=outcome,
            fallback=bool(call.steps) or bool(served_tier and served_tier != call.tier),
            simulated=self.simulated if simulated is None else simulated,
            request_id=request_id,
            stop_reason=stop_reason,
            error=error,
        )
        llm_call_save(row=row)
        call.steps.append(row)
        metrics.CALLS.labels(call.tier, model or "static", outcome).inc()
        if cost:
            metrics.COST.labels(model).inc(float(cost))
            metrics.TOKENS.labels(model, "input").inc(usage.input_tokens)
            metrics.TOKENS.labels(model, "output").inc(usage.output_tokens)
            metrics.TOKENS.labels(model, "cache_write").inc(usage.cache_creation_input_tokens)
            metrics.TOKENS.labels(model, "cache_read").inc(usage.cache_read_input_tokens)
        if latency:
            metrics.LATENCY.labels(model).observe(latency)
        return row

    def _static(self, call: _Call) -> Completion:
        record = self._record(call, "", "", Outcome.STATIC, error="every model step failed")
        log.error(
            "llm.static_answer",
            purpose=call.purpose,
            ticket_id=call.ticket_id,
            steps=[s.outcome for s in call.steps[:-1]],
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


@contextlib.contextmanager
def _after_the_call(what: str, model: str) -> Iterator[None]:
    """Redis bookkeeping once the provider has been called. The call happened (and may have been
    charged) whatever Redis says now, so losing Redis here must not lose the answer or its
    record, nor send the caller to pay for it again: the reservation then stays counted at its
    worst case (budgets err on refusing) and a probe lease expires by itself."""
    try:
        yield
    except redis.RedisError as exc:
        log.error("llm.redis_lost_after_call", what=what, model=model, error=str(exc))


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


def complete(**kwargs: Any) -> Completion:
    """Call a model through the gateway; see Gateway.complete for the arguments."""
    return get_gateway().complete(**kwargs)
