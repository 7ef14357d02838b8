"""What a lane step gets and gives back: the frozen facts of the step, and its outcome.

A lane is a set of plain functions `(env: StepEnv) -> StepOutcome`. They call models only
through `env.complete` (so every call carries the run's context and is counted on the run),
read billing and memory through their selectors, and write nothing themselves except through
idempotent services (a refund request keyed by the ticket, an escalation that is unique per
ticket). The runner commits the outcome together with the checkpoint.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils import timezone

from billing.models import Customer
from ledgerly import llm
from support.models import Run, Ticket


@dataclass(frozen=True)
class Reply:
    text: str
    sources: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class EscalationDraft:
    reason: str  # a short code: customer_asked, disputed_charge, cap_turns, tool_schema, ...
    detail: str  # the exact point of uncertainty, in plain words
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepOutcome:
    """What one step did. `state` replaces the lane's checkpointed state."""

    kind: str
    state: dict[str, Any]
    # "continue": run the next step now; "reply": send `reply` and wait for the customer;
    # "await_customer": reply and wait for the customer's answer (the lane resumes with it);
    # "await_approval": reply and wait for staff; "escalate": reply and hand over to staff.
    next: str
    reply: Reply | None = None
    escalation: EscalationDraft | None = None
    refund_request_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    lane: str | None = None  # set by the router
    route: dict[str, Any] | None = None


@dataclass
class StepEnv:
    """One step's inputs. `message` is the customer message this step answers."""

    run: Run
    ticket: Ticket
    customer: Customer
    checkpoint: dict[str, Any]
    message: str
    ctx: llm.CallContext
    started_at: dt.datetime = field(default_factory=timezone.now)
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.checkpoint.get("lane_state") or {})

    def complete(self, **kwargs: Any) -> llm.Completion:
        """`llm.complete` with this run's context; the usage is counted on the step."""
        completion = llm.complete(ctx=self.ctx, **kwargs)
        self.tokens += int(completion.usage.get("input_tokens", 0)) + int(
            completion.usage.get("output_tokens", 0)
        )
        self.cost_usd += completion.cost_usd
        self.calls.append(
            {
                "purpose": kwargs.get("purpose", ""),
                "prompt": completion.prompt_ref,
                "model": completion.model,
                "tier": completion.tier,
                "fallback": completion.fallback,
                "call_id": completion.call_id,
            }
        )
        return completion


def enqueue_step(*, run_id: int, step: int) -> None:
    """Queue step `step` of run `run_id` once the current transaction commits (at once outside
    one). The one way support hands a step to the workers."""
    from django.db import transaction

    from support.tasks import advance_run

    transaction.on_commit(lambda: advance_run.delay(run_id, step))
