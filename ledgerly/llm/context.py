"""The run a model call belongs to: a required argument of every gateway call.

A frozen value, not loose ids: the run budget is keyed by `run_id`, the customer budget by
`customer_ref` (billing's `Customer.ref`), and the call may not outlive `deadline_at`. The deadline
is wall-clock time, so it survives a checkpoint and means the same on any worker; the gateway turns
it into the transport's remaining time at the moment of each call.

This module imports nothing from Django, so apps may import it at module level.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

# The model tier a caller asks for, and how far a call may fall back when it cannot be served:
# "none" only the requested tier; "small" large -> small (the same as "none" for small);
# "static" as "small", then the static holding answer (which escalates).
Tier = Literal["small", "large"]
Fallback = Literal["none", "small", "static"]
FALLBACKS: tuple[Fallback, ...] = ("none", "small", "static")

# The longest label an LLMCall row holds (ledgerly.llm.models uses the same constant).
LABEL_MAX_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Pins:
    """What a release pins for the calls of a run: a model id per tier and a version per prompt
    name. A tier or prompt it does not name is served as configured (settings' model id, the
    prompt file's current version). The gateway checks a pinned model is priced and limited."""

    release: str  # the release's name (for logs and records)
    models: tuple[tuple[str, str], ...] = ()  # (tier, exact model id)
    prompts: tuple[tuple[str, int], ...] = ()  # (prompt name, version)

    @classmethod
    def of(cls, *, release: str, models: dict[str, str], prompts: dict[str, int]) -> Pins:
        return cls(
            release=release,
            models=tuple(sorted((str(t), str(m)) for t, m in models.items())),
            prompts=tuple(sorted((str(n), int(v)) for n, v in prompts.items())),
        )

    def model_for(self, tier: str) -> str | None:
        return dict(self.models).get(tier)

    def prompt_version(self, name: str) -> int | None:
        return dict(self.prompts).get(name)

    def as_dict(self) -> dict[str, object]:
        return {"release": self.release, "models": dict(self.models), "prompts": dict(self.prompts)}


@dataclass(frozen=True, slots=True)
class CallContext:
    run_id: str  # required, non-empty
    ticket_id: str  # "" only for runs not about a ticket (e.g. memory extraction)
    customer_ref: str  # billing Customer.ref ("cus_..."): the key of the customer budget
    deadline_at: dt.datetime  # timezone-aware wall-clock time
    # The run's release: which model ids and prompt versions its calls use (None: as configured).
    pins: Pins | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "ticket_id", "customer_ref"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(f"CallContext.{name} must be a str, got {type(value).__name__}")
            if len(value) > LABEL_MAX_LENGTH:
                raise ValueError(
                    f"CallContext.{name} must be at most {LABEL_MAX_LENGTH} characters"
                )
        if not self.run_id:
            raise ValueError("CallContext.run_id is required: every call belongs to a run")
        if not self.customer_ref:
            raise ValueError("CallContext.customer_ref is required: it keys the customer budget")
        if not isinstance(self.deadline_at, dt.datetime):
            raise ValueError("CallContext.deadline_at must be a datetime")
        if self.deadline_at.utcoffset() is None:
            raise ValueError("CallContext.deadline_at must be timezone-aware")
        if self.pins is not None and not isinstance(self.pins, Pins):
            raise ValueError("CallContext.pins must be a Pins")

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        """Seconds until the deadline (0.0 once it has passed)."""
        now = now or dt.datetime.now(dt.UTC)
        return max(0.0, (self.deadline_at - now).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for a checkpoint or a task's arguments); `from_dict` reverses it."""
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "ticket_id": self.ticket_id,
            "customer_ref": self.customer_ref,
            "deadline_at": self.deadline_at.isoformat(),
        }
        if self.pins is not None:
            d["pins"] = self.pins.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallContext:
        try:
            deadline_at = dt.datetime.fromisoformat(d["deadline_at"])
            pins = d.get("pins")
            return cls(
                run_id=d["run_id"],
                ticket_id=d["ticket_id"],
                customer_ref=d["customer_ref"],
                deadline_at=deadline_at,
                pins=None
                if pins is None
                else Pins.of(
                    release=pins["release"], models=pins["models"], prompts=pins["prompts"]
                ),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a CallContext: {d!r}") from exc

    @classmethod
    def starting_now(
        cls, *, run_id: str, ticket_id: str, customer_ref: str, seconds: float
    ) -> CallContext:
        """A context whose deadline is `seconds` from now."""
        return cls(
            run_id=run_id,
            ticket_id=ticket_id,
            customer_ref=customer_ref,
            deadline_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds),
        )
