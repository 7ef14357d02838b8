"""Releases: which prompt versions and model ids answer a ticket, and how a candidate is tried.

A release (`support.models.Release`) names a version per prompt and a model id per tier. One is
current (the first, "r1", is seeded on first use from the prompt files and the LLM_MODEL_*
settings). Staff start at most one candidate beside it:

- **shadow**: a sample of new tickets (RELEASE_SHADOW_SAMPLE, by a stable hash of the ticket) is
  also worked by the candidate in a shadow run: the same steps, every model call made, but its
  replies, escalations and refund requests go to a `ShadowOutput` record, never to the customer
  or the books (each write a lane tries is run in a transaction that is rolled back);
- **canary**: a share of customers (a stable hash of the customer ref and the release name, so
  one customer always gets the same release) is answered by it.

Every run records its release (`Run.release`), chosen at its first step. Beat's check
(`releases_check`) compares the candidate with the current release over the same window
(RELEASE_WINDOW_MINUTES) and rolls it back, once it has RELEASE_MIN_SAMPLE settled tickets, when
its completion rate is below RELEASE_MIN_COMPLETION_RATE (0.85), its p95 latency above
RELEASE_MAX_LATENCY_RATIO (2) times the current's, its cost per ticket above
RELEASE_MAX_COST_RATIO (1.5) times, or its error rate above RELEASE_MAX_ERROR_RATE (0.05). A rate
threshold counts only when the candidate is also worse than the current release in that window
(an outage both suffer is not the candidate's fault); the ratios need the current release's own
minimum sample. A rollback (by the check or by staff) is recorded on the release, who, why, when
and the figures, and takes effect for the next ticket: assignment reads the database every time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ledgerly import llm
from ledgerly.llm import conf as llm_conf
from ledgerly.llm import prompt_registry
from support.models import (
    CANDIDATE_STATES,
    Release,
    ReleaseState,
    Run,
    RunOutcome,
    RunStatus,
)
from support.steps import enqueue_step

log = structlog.get_logger(__name__)

SEED_NAME = "r1"
SYSTEM = "system"  # the actor of automatic rollbacks


class ReleaseError(ValueError):
    """A release cannot be made or moved as asked (unknown prompt version or model, wrong
    state, another candidate live)."""


# --- reading ----------------------------------------------------------------------------------
def release_current() -> Release:
    """The current release; the first call on an empty database seeds "r1" from what the repo
    runs today (every prompt file's version, the LLM_MODEL_* model ids)."""
    current = Release.objects.filter(state=ReleaseState.CURRENT).first()
    if current is not None:
        return current
    prompts = {p.name: p.version for p in prompt_registry.all_prompts() if _is_plain(p)}
    try:
        with transaction.atomic():
            return Release.objects.create(
                name=SEED_NAME,
                prompt_versions=prompts,
                model_ids=dict(llm_conf.config().models),
                state=ReleaseState.CURRENT,
                notes="Seeded from the prompt files and model settings in the repo.",
                created_by=SYSTEM,
                started_at=timezone.now(),
                started_by=SYSTEM,
                promoted_at=timezone.now(),
                promoted_by=SYSTEM,
            )
    except IntegrityError:  # another process seeded it first (or r1 exists, not current)
        return Release.objects.get(state=ReleaseState.CURRENT)


def _is_plain(prompt: prompt_registry.Prompt) -> bool:
    return prompt.path is not None and "@" not in prompt.path.stem


def release_candidate() -> Release | None:
    """The live candidate (shadow or canary), if any."""
    return Release.objects.filter(state__in=CANDIDATE_STATES).first()


def release_get(*, name: str) -> Release:
    release = Release.objects.filter(name=name).first()
    if release is None:
        raise ReleaseError(f"no release named {name!r}")
    return release


def releases_list() -> QuerySet[Release]:
    return Release.objects.order_by("-created_at")


def pins_of(release: Release) -> llm.Pins:
    """What the release pins for the gateway (ledgerly.llm.CallContext.pins)."""
    return llm.Pins.of(
        release=release.name,
        models=dict(release.model_ids or {}),
        prompts={str(k): int(v) for k, v in (release.prompt_versions or {}).items()},
    )


def _fraction(*parts: object) -> float:
    """A stable number in [0, 1) for `parts` (the same on every worker and every day)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def canary_bucket(*, release_name: str, customer_ref: str) -> float:
    """Where a customer falls for a canary: below the share, the canary answers them. Salted by
    the release so each canary tries another cohort; raising the share keeps the ones it had."""
    return _fraction("canary", release_name, customer_ref)


def shadow_sampled(*, release_name: str, ticket_id: int) -> bool:
    """Whether a shadow candidate also works this ticket (RELEASE_SHADOW_SAMPLE of them)."""
    return _fraction("shadow", release_name, ticket_id) < settings.RELEASE_SHADOW_SAMPLE


def release_for_customer(*, customer_ref: str) -> Release:
    """The release that answers a new ticket of this customer: the canary for its share of
    customers, else the current one."""
    candidate = release_candidate()
    if (
        candidate is not None
        and candidate.state == ReleaseState.CANARY
        and canary_bucket(release_name=candidate.name, customer_ref=customer_ref)
        < float(candidate.share)
    ):
        return candidate
    return release_current()


# --- assignment (the runner calls this at a run's first step) ---------------------------------
def run_release_assign(*, run: Run) -> Release:
    """Give a live run its release (once: a run keeps the release it started with) and, when a
    shadow candidate samples its ticket, start the shadow run beside it."""
    if run.release_id is not None:
        return run.release  # type: ignore[return-value]
    ticket = run.ticket
    if ticket is None:
        raise ValueError("a shadow run gets its release when it is made")
    release = release_for_customer(customer_ref=ticket.customer.ref)
    if Run.objects.filter(pk=run.pk, release__isnull=True).update(release=release) == 0:
        run.refresh_from_db(fields=["release"])
        return run.release  # type: ignore[return-value]
    run.release = release
    candidate = release_candidate()
    if (
        candidate is not None
        and candidate.state == ReleaseState.SHADOW
        and shadow_sampled(release_name=candidate.name, ticket_id=ticket.pk)
    ):
        shadow_spawn(run=run, release=candidate)
    return release


def shadow_spawn(*, run: Run, release: Release) -> Run | None:
    """Start `release`'s shadow of live run `run`: it answers the message the live run is about
    to answer (and only that one). None when this release already shadows the run."""
    checkpoint = dict(run.checkpoint)
    until = int(checkpoint.get("answered_through", 0)) + 1
    try:
        with transaction.atomic():
            shadow = Run.objects.create(
                shadow_of=run,
                release=release,
                status=RunStatus.READY,
                checkpoint={"phase": "idle", "answered_through": until - 1, "shadow_until": until},
            )
            enqueue_step(run_id=shadow.pk, step=0)
    except IntegrityError:
        return None
    log.info("release.shadow_started", run=run.pk, shadow=shadow.pk, release=release.name)
    return shadow


# --- metrics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseMetrics:
    """One release's figures over a window, from its runs (shadow runs for a shadow)."""

    release: str
    runs: int  # the sample: settled runs, and unsettled ones too old to still be on time
    completed: int  # settled with an answer or an escalation by design
    errors: int  # dead letters, the model unavailable
    completion_rate: float
    error_rate: float
    p95_latency_s: float | None  # first answer, from the run's creation
    cost_per_ticket_usd: Decimal | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_per_ticket_usd"] = (
            None if self.cost_per_ticket_usd is None else str(self.cost_per_ticket_usd)
        )
        return d


def p95(values: list[float]) -> float | None:
    """The 95th percentile by nearest rank (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def release_metrics(
    *, release: Release, since: dt.datetime, until: dt.datetime, shadow: bool | None = None
) -> ReleaseMetrics:
    """`release`'s figures for runs created in [since, until). A shadow release is measured on
    its shadow runs, any other on live runs (`shadow` overrides). A run still unsettled
    RELEASE_INCOMPLETE_AFTER_SECONDS after it began counts as not completed."""
    if shadow is None:
        shadow = release.state == ReleaseState.SHADOW or (
            release.state == ReleaseState.ROLLED_BACK
            and Run.objects.filter(release=release, shadow_of__isnull=False).exists()
        )
    stale = until - dt.timedelta(seconds=settings.RELEASE_INCOMPLETE_AFTER_SECONDS)
    rows = list(
        Run.objects.filter(
            Q(settled_at__isnull=False) | Q(created_at__lt=stale),
            release=release,
            shadow_of__isnull=not shadow,
            created_at__gte=since,
            created_at__lt=until,
        ).values_list("created_at", "settled_at", "outcome", "cost_usd")
    )
    n = len(rows)
    completed = sum(1 for *_, outcome, _c in rows if outcome in _COMPLETED)
    errors = sum(1 for *_, outcome, _c in rows if outcome == RunOutcome.ERROR)
    settled = [(created, done, cost) for created, done, _o, cost in rows if done is not None]
    latencies = [(done - created).total_seconds() for created, done, _c in settled]
    costs = [Decimal(cost) for *_, cost in settled]
    return ReleaseMetrics(
        release=release.name,
        runs=n,
        completed=completed,
        errors=errors,
        completion_rate=completed / n if n else 0.0,
        error_rate=errors / n if n else 0.0,
        p95_latency_s=p95(latencies),
        cost_per_ticket_usd=(sum(costs, Decimal(0)) / len(costs)).quantize(Decimal("0.000001"))
        if costs
        else None,
    )


_COMPLETED = (RunOutcome.COMPLETED, RunOutcome.ESCALATED)


@dataclass(frozen=True)
class Verdict:
    """The check's finding: roll back (with reasons) or not (with why not, when too few)."""

    rollback: bool
    reasons: list[str] = field(default_factory=list)
    candidate: ReleaseMetrics | None = None
    current: ReleaseMetrics | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollback": self.rollback,
            "reasons": self.reasons,
            "note": self.note,
            "candidate": None if self.candidate is None else self.candidate.as_dict(),
            "current": None if self.current is None else self.current.as_dict(),
            "thresholds": thresholds(),
        }


def thresholds() -> dict[str, float | int]:
    return {
        "window_minutes": settings.RELEASE_WINDOW_MINUTES,
        "min_sample": settings.RELEASE_MIN_SAMPLE,
        "min_completion_rate": settings.RELEASE_MIN_COMPLETION_RATE,
        "max_latency_ratio": settings.RELEASE_MAX_LATENCY_RATIO,
        "max_cost_ratio": settings.RELEASE_MAX_COST_RATIO,
        "max_error_rate": settings.RELEASE_MAX_ERROR_RATE,
    }


def release_verdict(*, candidate: ReleaseMetrics, current: ReleaseMetrics) -> Verdict:
    """Compare a candidate's figures with the current release's over the same window."""
    minimum = settings.RELEASE_MIN_SAMPLE
    if candidate.runs < minimum:
        return Verdict(
            False,
            candidate=candidate,
            current=current,
            note=f"{candidate.runs} settled tickets, fewer than the minimum of {minimum}",
        )
    compared = current.runs >= minimum
    reasons: list[str] = []
    floor = settings.RELEASE_MIN_COMPLETION_RATE
    if candidate.completion_rate < floor and (
        not compared or candidate.completion_rate < current.completion_rate
    ):
        reasons.append(
            f"completion rate {candidate.completion_rate:.1%} < {floor:.0%}"
            + (f" (current {current.completion_rate:.1%})" if compared else "")
        )
    ceiling = settings.RELEASE_MAX_ERROR_RATE
    if candidate.error_rate > ceiling and (
        not compared or candidate.error_rate > current.error_rate
    ):
        reasons.append(
            f"error rate {candidate.error_rate:.1%} > {ceiling:.0%}"
            + (f" (current {current.error_rate:.1%})" if compared else "")
        )
    if compared and candidate.p95_latency_s is not None and current.p95_latency_s:
        ratio = candidate.p95_latency_s / current.p95_latency_s
        if ratio > settings.RELEASE_MAX_LATENCY_RATIO:
            reasons.append(
                f"p95 latency {candidate.p95_latency_s:.2f}s is {ratio:.2f}x the current "
                f"{current.p95_latency_s:.2f}s (> {settings.RELEASE_MAX_LATENCY_RATIO}x)"
            )
    if compared and candidate.cost_per_ticket_usd is not None and current.cost_per_ticket_usd:
        ratio = float(candidate.cost_per_ticket_usd / current.cost_per_ticket_usd)
        if ratio > settings.RELEASE_MAX_COST_RATIO:
            reasons.append(
                f"cost per ticket ${candidate.cost_per_ticket_usd} is {ratio:.2f}x the current "
                f"${current.cost_per_ticket_usd} (> {settings.RELEASE_MAX_COST_RATIO}x)"
            )
    note = "" if compared else f"the current release has fewer than {minimum} tickets: no ratios"
    return Verdict(bool(reasons), reasons, candidate=candidate, current=current, note=note)


def release_compare(*, candidate: Release, now: dt.datetime | None = None) -> Verdict:
    """The candidate against the current release over the last RELEASE_WINDOW_MINUTES."""
    now = now or timezone.now()
    since = now - dt.timedelta(minutes=settings.RELEASE_WINDOW_MINUTES)
    current = release_current()
    return release_verdict(
        candidate=release_metrics(release=candidate, since=since, until=now),
        current=release_metrics(release=current, since=since, until=now, shadow=False),
    )


# --- writing ----------------------------------------------------------------------------------
def _check_pins(prompt_versions: dict[str, Any], model_ids: dict[str, Any]) -> dict[str, Any]:
    prompts: dict[str, int] = {}
    for name, version in prompt_versions.items():
        try:
            number = int(version)
        except (TypeError, ValueError) as exc:
            raise ReleaseError(f"prompt {name!r}: version must be an integer") from exc
        known = _versions(name)
        if not known:
            raise ReleaseError(f"no prompt named {name!r}")
        if number not in known:
            raise ReleaseError(
                f"prompt {name!r} has no version {number} (the repo has {known}); add "
                f"{name}@{number}.md beside {name}.md and relock"
            )
        prompt_registry.get(name, number)  # refuses a version whose text differs from its lock
        prompts[name] = number
    cfg = llm_conf.config()
    for tier, model in model_ids.items():
        if tier not in llm_conf.TIERS:
            raise ReleaseError(f"unknown tier {tier!r}: use {', '.join(llm_conf.TIERS)}")
        if model not in cfg.prices:
            raise ReleaseError(f"{tier}={model!r} has no price (LLM_PRICES_JSON)")
        if llm_conf.model_family(model) not in cfg.rate_limits:
            raise ReleaseError(f"{tier}={model!r} has no rate limit (LLM_RATE_LIMITS_JSON)")
        try:
            llm_conf.check_model(f"release {tier}", model)
        except Exception as exc:  # ImproperlyConfigured: a retired model
            raise ReleaseError(str(exc)) from exc
    return prompts


def _versions(name: str) -> list[int]:
    try:
        return prompt_registry.versions(name)
    except prompt_registry.PromptError as exc:
        raise ReleaseError(str(exc)) from exc


def release_create(
    *,
    name: str,
    actor: str,
    prompt_versions: dict[str, Any] | None = None,
    model_ids: dict[str, str] | None = None,
    based_on: Release | None = None,
    notes: str = "",
) -> Release:
    """A draft release: `based_on`'s pins (default: the current release's) with the given
    prompt versions and model ids laid over them. Every version must exist in the repo (and
    match its lock) and every model must be priced and rate-limited; ReleaseError otherwise."""
    base = based_on or release_current()
    prompts = {**(base.prompt_versions or {}), **(prompt_versions or {})}
    models = {**(base.model_ids or {}), **(model_ids or {})}
    checked = _check_pins(prompts, models)
    if Release.objects.filter(name=name).exists():
        raise ReleaseError(f"a release named {name!r} exists already")
    return Release.objects.create(
        name=name,
        prompt_versions=checked,
        model_ids=models,
        notes=notes,
        created_by=actor[:150],
    )


def release_start(
    *, release: Release, mode: str, actor: str, share: Decimal | float | None = None
) -> Release:
    """Start a draft as the candidate: `mode` "shadow" (a sample of tickets, output recorded
    only) or "canary" (a `share` of customers, 0 < share ≤ 1, answered by it). A canary may also
    be started from a running shadow, or re-started to change its share. One candidate at a
    time."""
    if mode not in (ReleaseState.SHADOW, ReleaseState.CANARY):
        raise ReleaseError("mode must be shadow or canary")
    fraction = Decimal(0)
    if mode == ReleaseState.CANARY:
        if share is None:
            raise ReleaseError("a canary needs a share of customers (0 < share <= 1)")
        fraction = Decimal(str(share))
        if not Decimal(0) < fraction <= Decimal(1):
            raise ReleaseError(f"share must be above 0 and at most 1, got {share}")
    allowed = [ReleaseState.DRAFT, ReleaseState.SHADOW, ReleaseState.CANARY]
    current = release_current()
    try:
        with transaction.atomic():
            # Starts are made one at a time (the current release's row is the lock), so two
            # staff cannot start two candidates at once; the constraint backs one per state.
            Release.objects.select_for_update().filter(pk=current.pk).first()
            if Release.objects.filter(state__in=CANDIDATE_STATES).exclude(pk=release.pk).exists():
                raise IntegrityError("another candidate")
            changed = Release.objects.filter(pk=release.pk, state__in=allowed).update(
                state=mode, share=fraction, started_at=timezone.now(), started_by=actor[:150]
            )
    except IntegrityError as exc:
        raise ReleaseError("another candidate is running: promote or roll it back first") from exc
    if not changed:
        release.refresh_from_db()
        raise ReleaseError(f"release {release.name!r} is {release.state}: it cannot be started")
    release.refresh_from_db()
    log.info("release.started", release=release.name, mode=mode, share=str(fraction), by=actor)
    return release


@transaction.atomic
def release_promote(*, release: Release, actor: str) -> Release:
    """Make a candidate (or a draft, or a retired release: going back to it) the current
    release; the old current one is retired. A rolled-back release is not promoted: make a new
    one from it."""
    locked = Release.objects.select_for_update().get(pk=release.pk)
    if locked.state == ReleaseState.CURRENT:
        return locked
    if locked.state not in (ReleaseState.DRAFT, ReleaseState.RETIRED, *CANDIDATE_STATES):
        raise ReleaseError(f"release {locked.name!r} is {locked.state}: it cannot be promoted")
    current = release_current()
    Release.objects.filter(pk=current.pk, state=ReleaseState.CURRENT).update(
        state=ReleaseState.RETIRED
    )
    Release.objects.filter(pk=locked.pk).update(
        state=ReleaseState.CURRENT, share=1, promoted_at=timezone.now(), promoted_by=actor[:150]
    )
    locked.refresh_from_db()
    log.info("release.promoted", release=locked.name, retired=current.name, by=actor)
    return locked


def release_rollback(
    *, release: Release, actor: str, reason: str, figures: dict[str, Any] | None = None
) -> bool:
    """Stop a candidate at once: no new ticket goes to it, its pending shadow steps stop.
    Records who (`actor`; "system" for the automatic check), why and when, with the figures.
    False when it was no candidate any more (rolled back or promoted meanwhile)."""
    changed = Release.objects.filter(pk=release.pk, state__in=CANDIDATE_STATES).update(
        state=ReleaseState.ROLLED_BACK,
        share=0,
        rolled_back_at=timezone.now(),
        rolled_back_by=actor[:150],
        rollback_reason=reason,
        rollback_metrics=figures or {},
    )
    release.refresh_from_db()
    if changed:
        log.warning("release.rolled_back", release=release.name, by=actor, reason=reason)
    return changed == 1


def releases_check(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """Beat: compare the live candidate with the current release; roll it back when it crosses
    a threshold. Returns what was found."""
    candidate = release_candidate()
    if candidate is None:
        return {"candidate": None}
    verdict = release_compare(candidate=candidate, now=now)
    if verdict.rollback:
        release_rollback(
            release=candidate,
            actor=SYSTEM,
            reason="; ".join(verdict.reasons),
            figures=verdict.as_dict(),
        )
    return {"candidate": candidate.name, **verdict.as_dict()}
