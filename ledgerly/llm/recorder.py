"""The one writer of a call's LLMCall rows and metrics: every step of `complete()` (answered,
failed, skipped, static) and every request of a Message Batch is recorded through it."""

from __future__ import annotations

from decimal import Decimal

from ledgerly.llm import metrics
from ledgerly.llm.context import CallContext
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage
from ledgerly.llm.prompt_registry import Prompt
from ledgerly.llm.services import llm_call_save


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
        metrics.CALLS.labels(self.tier, model or "static", outcome).inc()
        if cost:
            metrics.COST.labels(model).inc(float(cost))
            metrics.TOKENS.labels(model, "input").inc(usage.input_tokens)
            metrics.TOKENS.labels(model, "output").inc(usage.output_tokens)
            metrics.TOKENS.labels(model, "cache_write").inc(usage.cache_creation_input_tokens)
            metrics.TOKENS.labels(model, "cache_read").inc(usage.cache_read_input_tokens)
        if latency:
            metrics.LATENCY.labels(model).observe(latency)
        return row

    def outcomes(self) -> list[str]:
        return [str(row.outcome) for row in self.steps]

    def summary(self) -> str:
        """Which steps ran and how each ended, for an error message."""
        return "; ".join(
            f"{row.served_tier or '-'} {row.model or '-'}: {row.outcome}"
            + (f" ({row.error[:120]})" if row.error else "")
            for row in self.steps
        )
