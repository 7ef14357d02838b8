"""The one writer of a call's LLMCall rows and metrics: every step of `complete()` (answered,
failed, skipped, static) and every request of a Message Batch is recorded through it."""

from __future__ import annotations

import re
from decimal import Decimal

import structlog

from ledgerly import tracing
from ledgerly.llm import metrics
from ledgerly.llm.context import CallContext
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage
from ledgerly.llm.prompt_registry import Prompt
from ledgerly.llm.services import llm_call_save

log = structlog.get_logger("ledgerly.llm")
_STATUS = re.compile(r"(\d{3}): ")


def current_lane() -> str:
    """The lane of the support run this call is made for ("" outside one): the runner binds it
    to the logging context."""
    return str(structlog.contextvars.get_contextvars().get("lane") or "")


class CallRecorder:
    """Records the steps of one call, made for `ctx` (its run, ticket and customer)."""

    def __init__(
        self, *, ctx: CallContext, purpose: str, tier: str, prompt: Prompt, simulated: bool
    ) -> None:
        self.ctx = ctx
        self.purpose = purpose
        self.tier = tier  # the tier the caller asked for
        self.prompt = prompt
        self.simulated = simulated
        self.steps: list[LLMCall] = []

    def record(
        self,
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
        batch_id: str = "",
    ) -> LLMCall:
        usage = usage or TokenUsage()
        row = LLMCall(
            ticket_id=self.ctx.ticket_id,
            run_id=self.ctx.run_id,
            customer_id=self.ctx.customer_ref,
            purpose=self.purpose,
            tier=self.tier,
            served_tier=served_tier,
            model=model,
            prompt_name=self.prompt.name,
            prompt_version=self.prompt.version,
            prompt_hash=self.prompt.sha256,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cost_usd=cost or Decimal(0),
            latency_ms=round(latency * 1000),
            attempts=attempts,
            outcome=outcome,
            fallback=bool(self.steps) or bool(served_tier and served_tier != self.tier),
            simulated=self.simulated if simulated is None else simulated,
            batch_id=batch_id,
            request_id=request_id,
            stop_reason=stop_reason,
            error=error[:2000],
        )
        llm_call_save(row=row)
        self.steps.append(row)
        self._observe(row, usage, latency)
        return row

    def _observe(self, row: LLMCall, usage: TokenUsage, latency: float) -> None:
        """Metrics, a log line and a span for one recorded step (the span is written after the
        fact, with the step's measured latency, as a child of the current step's span)."""
        model, outcome, lane = row.model, str(row.outcome), current_lane()
        metrics.CALLS.labels(self.tier, model or "static", outcome, lane).inc()
        if row.cost_usd:
            metrics.COST.labels(model, self.tier, lane).inc(float(row.cost_usd))
        if usage.input_tokens or usage.output_tokens:
            for kind, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_write", usage.cache_creation_input_tokens),
                ("cache_read", usage.cache_read_input_tokens),
            ):
                metrics.TOKENS.labels(model, self.tier, lane, kind).inc(count)
        if latency:
            metrics.LATENCY.labels(model, self.tier, lane).observe(latency)
        if outcome in (LLMCall.Outcome.OK, LLMCall.Outcome.STATIC) and row.fallback:
            to = "static" if outcome == LLMCall.Outcome.STATIC else row.served_tier
            metrics.FALLBACKS.labels(self.tier, to).inc()
        status = _STATUS.match(row.error) if row.error else None
        if status is not None:
            metrics.PROVIDER_ERRORS.labels(model, status.group(1)).inc()
        fields = {
            "purpose": self.purpose,
            "tier": self.tier,
            "served_tier": row.served_tier,
            "model": model,
            "outcome": outcome,
            "lane": lane,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_input_tokens,
            "cost_usd": float(row.cost_usd),
            "latency_ms": row.latency_ms,
            "attempts": row.attempts,
            "fallback": row.fallback,
            "run_id": self.ctx.run_id,
            "ticket_id": self.ctx.ticket_id,
        }
        failed = outcome not in (LLMCall.Outcome.OK, LLMCall.Outcome.STATIC)
        (log.warning if failed else log.info)(
            "llm.call", **fields, **({"error": row.error[:200]} if failed and row.error else {})
        )
        tracing.record_span(
            "llm.call",
            seconds=latency,
            error=(row.error or outcome) if failed else None,
            attributes={
                **{f"llm.{k}": v for k, v in fields.items()},
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
            },
        )

    def outcomes(self) -> list[str]:
        return [str(row.outcome) for row in self.steps]

    def summary(self) -> str:
        """Which steps ran and how each ended, for an error message."""
        return "; ".join(
            f"{row.served_tier or '-'} {row.model or '-'}: {row.outcome}"
            + (f" ({row.error[:120]})" if row.error else "")
            for row in self.steps
        )
