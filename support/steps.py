"""What a lane step gets and gives back: the frozen facts of the step, and its outcome.

A lane is a set of plain functions `(env: StepEnv) -> StepOutcome`. They call models only
through `env.complete` (so every call carries the run's context, release pins included, and is
counted on the run), read billing and memory through their selectors, and write nothing
themselves except through idempotent services (a refund request keyed by the ticket, an
escalation that is unique per ticket), each called through `env.write`. The runner commits the
outcome together with the checkpoint.

In a shadow run (`env.shadow`, support/releases.py) `env.write` is a dry run: the service runs
in a transaction that is rolled back (its rows, and the tasks it queued on commit, vanish) and
what it returned is noted in `env.dry_runs` for the shadow's record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from django.db import models, transaction
from django.utils import timezone

from billing.models import Customer
from ledgerly import llm
from ledgerly.llm import conf as llm_conf
from ledgerly.llm import prompt_registry
from support.models import Run, Ticket

T = TypeVar("T")


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
    shadow: bool = False  # a shadow run: writes are dry runs, nothing reaches the customer
    dry_runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.checkpoint.get("lane_state") or {})

    def model_for(self, tier: str) -> str:
        """The model id this run's calls of `tier` use (its release's pin, else the setting)."""
        pins = self.ctx.pins
        pinned = None if pins is None else pins.model_for(tier)
        return pinned or llm_conf.config().models[tier]

    def prompt(self, name: str) -> prompt_registry.Prompt:
        """The version of prompt `name` this run's calls use."""
        pins = self.ctx.pins
        return prompt_registry.get(name, None if pins is None else pins.prompt_version(name))

    def write(self, service: Callable[..., T], /, **kwargs: Any) -> T:
        """Call a writing service. In a shadow run it is a dry run: run in a transaction that is
        rolled back, its result noted in `dry_runs` (an exception it raises goes to the caller,
        as it would in a live run)."""
        if not self.shadow:
            return service(**kwargs)
        with transaction.atomic():
            result = service(**kwargs)
            self.dry_runs.append({"service": service.__name__, "result": _describe(result)})
            transaction.set_rollback(True)
        return result

    def complete(self, **kwargs: Any) -> llm.Completion:
        """`llm.complete` with this run's context; the usage is counted on the step."""
        if self.shadow:
            # Nobody watches a shadow: its drafts must not stream into the customer's chat.
            kwargs.pop("on_text", None)
            kwargs.pop("on_restart", None)
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


def _describe(value: object) -> object:
    """A JSON-ready account of what a dry-run service returned (a row it would have made)."""
    if isinstance(value, models.Model):
        fields = {
            f.attname: getattr(value, f.attname)
            for f in value._meta.concrete_fields
            if not isinstance(f, models.JSONField | models.TextField) or f.name == "reason"
        }
        return {
            "model": value._meta.label,
            **{k: v if isinstance(v, int | bool | None) else str(v) for k, v in fields.items()},
        }
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)


def enqueue_step(*, run_id: int, step: int) -> None:
    """Queue step `step` of run `run_id` once the current transaction commits (at once outside
    one). The one way support hands a step to the workers."""
    from django.db import transaction

    from support.tasks import advance_run

    transaction.on_commit(lambda: advance_run.delay(run_id, step))
