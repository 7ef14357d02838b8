"""Message Batches: many independent requests as one batch, at half price, for offline work
(evaluation runs, re-summarising, back-filling labels) where an answer within hours is fine.

`run_batch` builds each request exactly as `complete()` would (same prompts, cache_control and
rules), reserves the whole batch's worst case at the batch price against the global budgets,
submits, polls until the batch has ended, then records one LLMCall per request (with the batch
id, priced at the batch discount) and settles the reservation to the real total. A batch given
up on (timeout, lost connection) is cancelled where possible and its reservation stays counted:
the provider still bills whatever it processed, and we never saw what that was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import anthropic
import structlog

from ledgerly.llm import prompt_registry
from ledgerly.llm.budget import Candidate, Refusal
from ledgerly.llm.errors import BudgetExhausted, ModelCallFailed
from ledgerly.llm.gateway import Gateway, _Call, estimate_prompt_tokens, get_gateway
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd, to_micro_usd, worst_case_micro_usd
from ledgerly.llm.services import llm_call_save

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str  # unique within the batch: [a-zA-Z0-9_-]{1,64}
    tier: Literal["small", "large"]
    prompt: str
    messages: list[dict[str, Any]]
    max_tokens: int
    purpose: str = "batch"
    output_schema: dict[str, Any] | None = None
    system_extra: str | None = None
    ticket_id: object = None
    run_id: object = None
    customer_id: object = None


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


def run_batch(
    requests: Sequence[BatchRequest],
    *,
    poll_seconds: float = 30.0,
    timeout_seconds: float = 24 * 3600,
    gateway: Gateway | None = None,
) -> list[BatchResult]:
    """Submit `requests` as one Message Batch, wait for it, record and return the results (in
    the order given). Blocks while polling: call it from a script or a long-running task, never
    from a request handler. Raises BudgetExhausted before submitting if the batch's worst case
    does not fit the global budgets, ModelCallFailed if the batch does not end in time (it is
    then cancelled, and its reservation stays counted)."""
    gw = gateway or get_gateway()
    if len({r.custom_id for r in requests}) != len(requests):
        raise ModelCallFailed("custom_id values must be unique within a batch")
    discount = gw.config.batch_discount
    calls: dict[str, _Call] = {}
    params: list[dict[str, Any]] = []
    worst = 0
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
        calls[item.custom_id] = _Call(
            tier=item.tier,
            purpose=item.purpose,
            prompt=prompt,
            request=body,
            max_tokens=item.max_tokens,
            ticket_id="" if item.ticket_id is None else str(item.ticket_id),
            run_id="" if item.run_id is None else str(item.run_id),
            customer_id="" if item.customer_id is None else str(item.customer_id),
            run_key=item.run_id,
            customer_key=item.customer_id,
            tools=None,
            output_schema=item.output_schema,
            deadline=None,
            extra_headers={},
            prompt_tokens=prompt_tokens,
        )
        params.append({"custom_id": item.custom_id, "params": {"model": model, **body}})

    reserved = math_ceil_fraction(worst, 1 - discount)
    reservation = gw.budgets.reserve([Candidate(reserved, 0, large=False)])
    if isinstance(reservation, Refusal):
        raise BudgetExhausted(reservation.scope, f"batch worst case does not fit: {reservation}")

    spent = 0
    try:
        batch = gw.client.messages.batches.create(requests=params)  # type: ignore[arg-type]
    except anthropic.APIStatusError:
        gw.budgets.settle(reservation, micro_usd=0, tokens=0)  # refused: nothing was submitted
        raise
    log.info("llm.batch_submitted", batch_id=batch.id, requests=len(params))
    give_up = time.monotonic() + timeout_seconds
    while batch.processing_status != "ended":
        if time.monotonic() > give_up:
            _cancel(gw, batch.id)
            raise ModelCallFailed(f"batch {batch.id} did not end within {timeout_seconds}s")
        time.sleep(poll_seconds)
        batch = gw.client.messages.batches.retrieve(batch.id)

    results: dict[str, BatchResult] = {}
    for entry in gw.client.messages.batches.results(batch.id):
        result, micro = _record(gw, calls[entry.custom_id], entry, batch.id, discount)
        results[entry.custom_id] = result
        spent += micro
    gw.budgets.settle(reservation, micro_usd=spent, tokens=0)
    return [results[item.custom_id] for item in requests if item.custom_id in results]


def _cancel(gw: Gateway, batch_id: str) -> None:
    """Ask the provider to stop a batch we no longer wait for (requests it has not started are
    not billed). Its reservation stays counted: what it did process is billed all the same."""
    try:
        gw.client.messages.batches.cancel(batch_id)
    except anthropic.APIError as exc:
        log.error("llm.batch_cancel_failed", batch_id=batch_id, error=str(exc))
    log.warning("llm.batch_abandoned", batch_id=batch_id, detail="reservation kept counted")


def math_ceil_fraction(amount: int, fraction: Decimal) -> int:
    """`amount` x `fraction`, rounded up (whole micro-dollars)."""
    return to_micro_usd(Decimal(amount) * fraction / 1_000_000)


def _record(
    gw: Gateway, call: _Call, entry: Any, batch_id: str, discount: Decimal
) -> tuple[BatchResult, int]:
    outcome = entry.result.type
    model = gw.config.models[call.tier]
    common: dict[str, Any] = {
        "ticket_id": call.ticket_id,
        "run_id": call.run_id,
        "customer_id": call.customer_id,
        "purpose": call.purpose,
        "tier": call.tier,
        "served_tier": call.tier,
        "model": model,
        "prompt_name": call.prompt.name,
        "prompt_version": call.prompt.version,
        "prompt_hash": call.prompt.sha256,
        "attempts": 1,
        "simulated": gw.simulated,
        "batch_id": batch_id,
    }
    if outcome != "succeeded":
        error = str(getattr(entry.result, "error", "") or outcome)[:2000]
        row = llm_call_save(row=LLMCall(outcome=LLMCall.Outcome.FAILED, error=error, **common))
        return (
            BatchResult(
                entry.custom_id, outcome, "", None, [], model, Decimal(0), {}, row.pk, error
            ),
            0,
        )
    message = entry.result.message
    usage = TokenUsage(
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        cache_creation_input_tokens=message.usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=message.usage.cache_read_input_tokens or 0,
    )
    # Priced by the id we asked for (the price table's key): the answer may name the dated
    # snapshot that served an alias, which is what gets recorded.
    cost = cost_usd(gw.config.price(model), usage, discount=discount)
    content = [block.to_dict(mode="json") for block in message.content]
    text = "".join(b["text"] for b in content if b.get("type") == "text")
    data, invalid = gw._structured(call.output_schema, text, message.stop_reason)
    row = LLMCall(
        outcome=LLMCall.Outcome.INVALID_OUTPUT if invalid else LLMCall.Outcome.OK,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        cost_usd=cost,
        stop_reason=message.stop_reason or "",
        error=invalid or "",
        **{**common, "model": message.model},
    )
    llm_call_save(row=row)
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
    )
