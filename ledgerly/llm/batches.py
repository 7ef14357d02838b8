"""Message Batches: many independent requests as one batch, at half price, for offline work
(evaluation runs, re-summarising, back-filling labels) where an answer within hours is fine.

A batch can take up to 24 hours, so nothing waits for it: it is a row (`LLMBatch`) with a wake-at
time, in two steps a beat sweep drives.

- `batch_submit(ctx=..., key=..., requests=[...])` builds each request exactly as `complete()`
  would (same prompts, cache_control and rules), reserves the whole batch's worst case at the
  batch price against the budgets (global, and ctx's run and customer), takes `key`, submits, and
  stores the provider's batch id. Idempotent on `key`: a second submit with a key already taken
  returns the stored row and never submits again (a redelivered task cannot pay twice).
- `batch_poll(batch=...)` asks the provider once. While the batch is processing it moves
  `next_poll_at` on and returns None; once it has ended it records one LLMCall per request (with
  the batch id, priced at the batch discount), settles the reservation to the real total and
  returns the results. Past ctx.deadline_at it asks the provider to cancel the batch and goes on
  polling: what the batch did process is still billed, so it is still recorded, and until then
  the worst case stays counted. Polling an ended batch returns its stored results.
- `ledgerly.llm.selectors.batches_due(now=...)` lists the batches to poll.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import anthropic
import redis
import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from ledgerly.llm import prompt_registry
from ledgerly.llm.budget import Candidate, Refusal, Reservation
from ledgerly.llm.context import CallContext, Tier
from ledgerly.llm.errors import BudgetExhausted, Defer, ModelCallFailed
from ledgerly.llm.gateway import (
    Gateway,
    estimate_prompt_tokens,
    get_gateway,
    parse_structured,
    usage_of,
)
from ledgerly.llm.models import LLMBatch, LLMCall
from ledgerly.llm.pricing import cost_usd, to_micro_usd, worst_case_micro_usd
from ledgerly.llm.recorder import CallRecorder
from ledgerly.llm.services import check_outside_transaction

log = structlog.get_logger(__name__)

KEY_MAX_LENGTH = 200
# A provider that refused the submission for a transient reason is asked again this much later.
SUBMIT_RETRY_SECONDS = 60.0
# A batch's reservation stays open while the batch runs (up to 24 hours at the provider) and
# its polls settle it; past this the expiry sweep gives it back (its row was lost, say).
BATCH_HOLD_SECONDS = 26 * 3600


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str  # unique within the batch: [a-zA-Z0-9_-]{1,64}
    tier: Tier
    prompt: str
    messages: list[dict[str, Any]]
    max_tokens: int
    purpose: str = "batch"
    output_schema: dict[str, Any] | None = None
    system_extra: str | None = None


@dataclass(frozen=True)
class BatchResult:
    custom_id: str
    outcome: str  # succeeded | errored | canceled | expired | invalid_output
    text: str
    data: dict[str, Any] | None
    content: list[dict[str, Any]]
    model: str
    cost_usd: Decimal
    usage: dict[str, int]
    call_id: int
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_usd": str(self.cost_usd)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchResult:
        return cls(**{**d, "cost_usd": Decimal(d["cost_usd"])})


def batch_submit(
    *,
    ctx: CallContext,
    key: str,
    requests: Sequence[BatchRequest],
    poll_seconds: float = 30.0,
    gateway: Gateway | None = None,
) -> LLMBatch:
    """Submit `requests` as one Message Batch on behalf of `ctx`'s run, once per `key`.

    Preconditions: no database transaction is open; `key` (at most 200 characters) names this
    piece of work for good (a second submit with it returns the stored row, whatever its state,
    and never submits again). Raises BudgetExhausted before submitting (and without taking the
    key) when the batch's worst case does not fit the budgets; Defer or ModelCallFailed when the
    provider refuses the batch (the key is then free again: nothing was submitted). A batch
    whose submission was cut off without an answer stays `submitting` with its reservation
    counted: the provider may have it, so it is never sent twice."""
    check_outside_transaction("llm.batch_submit()")
    if not key or len(key) > KEY_MAX_LENGTH:
        raise ModelCallFailed(f"key must be 1 to {KEY_MAX_LENGTH} characters")
    if not requests:
        raise ModelCallFailed("a batch needs at least one request")
    if len({r.custom_id for r in requests}) != len(requests):
        raise ModelCallFailed("custom_id values must be unique within a batch")
    existing = LLMBatch.objects.filter(key=key).first()
    if existing is not None:
        return existing

    gw = gateway or get_gateway()
    params: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    worst = tokens = 0
    for item in requests:
        prompt = prompt_registry.get(item.prompt)
        body = gw.build_request(
            prompt=prompt,
            messages=item.messages,
            max_tokens=item.max_tokens,
            tools=None,
            output_schema=item.output_schema,
            system_extra=item.system_extra,
        )
        model = gw.config.models[item.tier]
        prompt_tokens = estimate_prompt_tokens(body)
        worst += worst_case_micro_usd(
            gw.config.price(model), prompt_tokens=prompt_tokens, max_tokens=item.max_tokens
        )
        tokens += prompt_tokens + item.max_tokens
        params.append({"custom_id": item.custom_id, "params": {"model": model, **body}})
        metas.append(
            {
                "custom_id": item.custom_id,
                "tier": item.tier,
                "model": model,
                "purpose": item.purpose,
                "prompt": [prompt.name, prompt.version, prompt.sha256],
                "output_schema": item.output_schema,
            }
        )

    reserved = math_ceil_fraction(worst, 1 - gw.config.batch_discount)
    reservation = gw.budgets.reserve(
        [Candidate(reserved, tokens, large=False)],
        run_id=ctx.run_id,
        customer_id=ctx.customer_ref,
        hold_seconds=BATCH_HOLD_SECONDS,
    )
    if isinstance(reservation, Refusal):
        raise BudgetExhausted(reservation.scope, f"batch worst case does not fit: {reservation}")
    try:
        with transaction.atomic():
            batch = LLMBatch.objects.create(
                key=key,
                run_id=ctx.run_id,
                ticket_id=ctx.ticket_id,
                customer_ref=ctx.customer_ref,
                deadline_at=ctx.deadline_at,
                poll_every_seconds=poll_seconds,
                requests=metas,
                reservation=reservation.as_dict(),
            )
    except IntegrityError:
        # Another submit took the key first: it submits, this one gives its reservation back.
        gw.budgets.settle(reservation, micro_usd=0, tokens=0)
        return LLMBatch.objects.get(key=key)

    try:
        remote = gw.client.messages.batches.create(requests=params)  # type: ignore[arg-type]
    except anthropic.APIStatusError as exc:
        # Refused: nothing was submitted, so the reservation and the key are given back.
        gw.budgets.settle(reservation, micro_usd=0, tokens=0)
        batch.delete()
        if exc.status_code == 429 or exc.status_code >= 500:
            raise Defer(SUBMIT_RETRY_SECONDS, f"batch refused: {exc.status_code}") from exc
        raise ModelCallFailed(f"batch refused: {exc.status_code} {exc.message}") from exc
    except anthropic.APIConnectionError as exc:
        # No answer: the provider may have the batch. Never submitted twice; stays counted.
        LLMBatch.objects.filter(pk=batch.pk).update(error=f"submission unanswered: {exc}"[:2000])
        log.error("llm.batch_submit_unanswered", key=key, error=str(exc))
        raise Defer(SUBMIT_RETRY_SECONDS, "batch submission unanswered") from exc

    now = timezone.now()
    batch.provider_batch_id = remote.id
    batch.state = LLMBatch.State.PROCESSING
    batch.submitted_at = now
    batch.next_poll_at = now + dt.timedelta(seconds=poll_seconds)
    batch.save(update_fields=["provider_batch_id", "state", "submitted_at", "next_poll_at"])
    log.info("llm.batch_submitted", key=key, batch_id=remote.id, requests=len(params))
    return batch


def batch_poll(*, batch: LLMBatch, gateway: Gateway | None = None) -> list[BatchResult] | None:
    """Ask the provider once about `batch` (see the module docstring). Returns None while it is
    processing (next_poll_at moved on), else its results in the order submitted; raises Defer
    (next_poll_at moved on too) when the provider cannot be asked. Safe to run twice at once:
    only one poller records and settles an ended batch. Precondition: no database transaction
    is open."""
    check_outside_transaction("llm.batch_poll()")
    batch.refresh_from_db()
    if batch.state == LLMBatch.State.ENDED:
        return [BatchResult.from_dict(r) for r in batch.results]
    if batch.state != LLMBatch.State.PROCESSING:
        return None
    gw = gateway or get_gateway()
    try:
        remote = gw.client.messages.batches.retrieve(batch.provider_batch_id)
    except anthropic.APIError as exc:
        # The provider could not say: ask again at the next poll (the sweep is the retry).
        _poll_later(batch)
        raise Defer(batch.poll_every_seconds, f"batch poll failed: {exc}") from exc
    now = timezone.now()
    if remote.processing_status != "ended":
        if now >= batch.deadline_at and batch.cancel_requested_at is None:
            _cancel(gw, batch.provider_batch_id)
            batch.cancel_requested_at = now
        _poll_later(batch)
        return None

    try:
        entries = {e.custom_id: e for e in gw.client.messages.batches.results(remote.id)}
    except anthropic.APIError as exc:
        _poll_later(batch)
        raise Defer(batch.poll_every_seconds, f"batch results unreadable: {exc}") from exc
    ctx = CallContext(
        run_id=batch.run_id,
        ticket_id=batch.ticket_id,
        customer_ref=batch.customer_ref,
        deadline_at=batch.deadline_at,
    )
    with transaction.atomic():
        locked = LLMBatch.objects.select_for_update().get(pk=batch.pk)
        if locked.state != LLMBatch.State.PROCESSING:
            # Another poller recorded it first.
            return [BatchResult.from_dict(r) for r in locked.results]
        results: list[BatchResult] = []
        spent = used_tokens = 0
        for meta in locked.requests:
            entry = entries.get(meta["custom_id"])
            if entry is not None:
                result, micro, entry_tokens = _record(gw, ctx, meta, entry, remote.id)
                results.append(result)
                spent += micro
                used_tokens += entry_tokens
        locked.state = LLMBatch.State.ENDED
        locked.results = [r.as_dict() for r in results]
        locked.ended_at = now
        locked.next_poll_at = None
        locked.save(update_fields=["state", "results", "ended_at", "next_poll_at"])
    if locked.reservation:
        try:
            gw.budgets.settle(
                Reservation.from_dict(locked.reservation), micro_usd=spent, tokens=used_tokens
            )
        except redis.RedisError as exc:  # the worst case stays counted: errs on refusing
            log.error("llm.batch_settle_failed", key=batch.key, error=str(exc))
    batch.refresh_from_db()
    log.info("llm.batch_recorded", key=batch.key, batch_id=remote.id, results=len(results))
    return results


def _poll_later(batch: LLMBatch) -> None:
    """Move the batch's next poll on by its interval (and keep a cancel request on record)."""
    batch.next_poll_at = timezone.now() + dt.timedelta(seconds=batch.poll_every_seconds)
    LLMBatch.objects.filter(pk=batch.pk, state=LLMBatch.State.PROCESSING).update(
        next_poll_at=batch.next_poll_at, cancel_requested_at=batch.cancel_requested_at
    )


def _cancel(gw: Gateway, batch_id: str) -> None:
    """Ask the provider to stop a batch past its deadline (requests it has not started are not
    billed; what it did process is, and is recorded once the batch has ended)."""
    try:
        gw.client.messages.batches.cancel(batch_id)
    except anthropic.APIError as exc:
        log.error("llm.batch_cancel_failed", batch_id=batch_id, error=str(exc))
    log.warning("llm.batch_cancelled", batch_id=batch_id, detail="past its deadline")


def math_ceil_fraction(amount: int, fraction: Decimal) -> int:
    """`amount` x `fraction`, rounded up (whole micro-dollars)."""
    return to_micro_usd(Decimal(amount) * fraction / 1_000_000)


def _record(
    gw: Gateway, ctx: CallContext, meta: dict[str, Any], entry: Any, batch_id: str
) -> tuple[BatchResult, int, int]:
    """Record one request's result; returns it with its cost (micro-dollars) and tokens."""
    name, version, sha256 = meta["prompt"]
    recorder = CallRecorder(
        ctx=ctx,
        purpose=meta["purpose"],
        tier=meta["tier"],
        prompt=prompt_registry.Prompt(name=name, version=version, text="", sha256=sha256),
        simulated=gw.simulated,
    )
    model, tier, outcome = meta["model"], meta["tier"], entry.result.type
    if outcome != "succeeded":
        error = str(getattr(entry.result, "error", "") or outcome)[:2000]
        row = recorder.record(
            tier, model, LLMCall.Outcome.FAILED, attempts=1, error=error, batch_id=batch_id
        )
        return (
            BatchResult(
                entry.custom_id, outcome, "", None, [], model, Decimal(0), {}, row.pk, error
            ),
            0,
            0,
        )
    message = entry.result.message
    usage = usage_of(message)
    # Priced by the id we asked for (the price table's key): the answer may name the dated
    # snapshot that served an alias, which is what gets recorded.
    cost = cost_usd(gw.config.price(model), usage, discount=gw.config.batch_discount)
    content = [block.to_dict(mode="json") for block in message.content]
    text = "".join(b["text"] for b in content if b.get("type") == "text")
    data, invalid = parse_structured(meta["output_schema"], text, message.stop_reason)
    row = recorder.record(
        tier,
        message.model,
        LLMCall.Outcome.INVALID_OUTPUT if invalid else LLMCall.Outcome.OK,
        usage=usage,
        cost=cost,
        attempts=1,
        stop_reason=message.stop_reason or "",
        error=invalid or "",
        batch_id=batch_id,
    )
    return (
        BatchResult(
            custom_id=entry.custom_id,
            outcome="invalid_output" if invalid else "succeeded",
            text=text,
            data=data,
            content=content,
            model=message.model,
            cost_usd=cost,
            usage=usage.as_dict(),
            call_id=row.pk,
            error=invalid or "",
        ),
        to_micro_usd(cost),
        usage.prompt_tokens + usage.output_tokens,
    )
