"""Evaluation against the golden set: grade what each ticket ENDED AS (tau-bench style).

A golden case (tests/golden/*.jsonl, format fixed in the golden-set brief) names a customer, the
messages they send in order and what the ticket must end as: the lane its first message took,
facts that must (and strings that must not) occur in the final reply, the refund request it
left (amount, currency, auto-approval, or none) and whether it ended escalated to staff. One
invariant is checked on every case whatever it expects: no refund was executed without an
approval (automatic by policy, or a staff decision).

The pieces, from the outside in:

* `World` builds a scratch database (migrated, seeded with the demo world, the help center and
  the router's exemplars) and, per repeat, runs its own Celery worker (and beat, which wakes
  waiting runs) with `LLM_SIMULATOR_SEED=<repeat + 1>` and the configured fault rate, so
  repeats differ the way samples of a real model do. With ANTHROPIC_API_KEY set, the same runs
  go to Claude.
* `World.run` plays the cases, different customers concurrently but never two cases of one
  customer at once, each from the seeded world for its customer (`reset_customer`), each
  message after the previous one was answered (`ticket_settled`), with a per-message timeout.
* `grade` and `summarise` are pure functions of the recorded outcomes (unit-tested without a
  worker): accuracies per check, pass rate, pass^k, tokens, cost and latency per lane.

* Releases: `RunOptions.release` (a `ReleaseSpec`) makes that release the current one in the
  scratch database before the cases are played, so every run uses its prompt versions and
  model ids; `compare_reports` lays two reports side by side (`evaluate --release A --compare
  B`).

`manage.py evaluate` and `bench/pipeline.py` are thin shells around this module.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LANES = ("faq", "refund", "agent")
EXPECT_KEYS = frozenset({"lane", "facts", "absent", "refund", "escalated"})
CASE_KEYS = frozenset({"id", "customer", "messages", "expect"})
# A live escalation is one staff still has to act on.
LIVE_ESCALATION_STATES = ("open", "claimed")
WITHDRAWN = "withdrawn"
ROOT = Path(__file__).resolve().parent.parent


# --- golden cases ---------------------------------------------------------------------------------
class GoldenFormatError(ValueError):
    """A golden file does not follow the format; the message names the file and line."""


@dataclass(frozen=True)
class ExpectedRefund:
    amount: Decimal
    currency: str
    auto_approved: bool


@dataclass(frozen=True)
class Expect:
    """What a case checks. None (or an empty tuple) means "not checked"; `refund_checked`
    separates an omitted "refund" key from "refund": null (no request may exist)."""

    lane: str | None = None
    facts: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    refund_checked: bool = False
    refund: ExpectedRefund | None = None
    escalated: bool | None = None

    @property
    def checks_reply(self) -> bool:
        return bool(self.facts or self.absent)


@dataclass(frozen=True)
class Case:
    id: str
    customer: str | None  # an email, or None for the background customer
    messages: tuple[str, ...]
    expect: Expect
    origin: str = ""  # file:line, for messages


def _fail(origin: str, message: str) -> GoldenFormatError:
    return GoldenFormatError(f"{origin}: {message}")


def _strings(value: object, *, origin: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(origin, f'"{key}" must be a list of non-empty strings')
    return tuple(value)


_AMOUNT = re.compile(r"\d+\.\d{2}")


def _expected_refund(value: object, *, origin: str) -> ExpectedRefund | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"amount", "currency", "auto_approved"}:
        raise _fail(origin, '"refund" must be null or {"amount", "currency", "auto_approved"}')
    amount, currency, auto = value["amount"], value["currency"], value["auto_approved"]
    # The format writes amounts with exactly two decimals ("49.00"), as the request stores them.
    parsed = Decimal(amount) if isinstance(amount, str) and _AMOUNT.fullmatch(amount) else None
    if parsed is None or parsed <= 0:
        raise _fail(origin, f'refund "amount" must be a string like "49.00", got {amount!r}')
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isupper()):
        raise _fail(origin, f'refund "currency" must be an ISO code like "USD", got {currency!r}')
    if not isinstance(auto, bool):
        raise _fail(origin, 'refund "auto_approved" must be true or false')
    return ExpectedRefund(amount=parsed, currency=currency, auto_approved=auto)


def parse_case(raw: object, *, origin: str = "") -> Case:
    """One golden case from its decoded JSON; GoldenFormatError on anything off-format (an
    unknown key is an error, so a typo cannot silently turn a check off)."""
    if not isinstance(raw, dict):
        raise _fail(origin, "a case must be a JSON object")
    unknown = set(raw) - CASE_KEYS
    if unknown:
        raise _fail(origin, f"unknown keys {sorted(unknown)}")
    case_id = raw.get("id")
    if not isinstance(case_id, str) or not case_id:
        raise _fail(origin, '"id" must be a non-empty string')
    customer = raw.get("customer")
    if customer is not None and not (isinstance(customer, str) and "@" in customer):
        raise _fail(origin, '"customer" must be an email or null')
    messages = _strings(raw.get("messages"), origin=origin, key="messages")
    if not messages:
        raise _fail(origin, '"messages" must not be empty')
    expect_raw = raw.get("expect")
    if not isinstance(expect_raw, dict):
        raise _fail(origin, '"expect" must be an object')
    unknown = set(expect_raw) - EXPECT_KEYS
    if unknown:
        raise _fail(origin, f"unknown expect keys {sorted(unknown)}")
    lane = expect_raw.get("lane")
    if "lane" in expect_raw and lane not in LANES:
        raise _fail(origin, f'"lane" must be one of {LANES}, got {lane!r}')
    escalated = expect_raw.get("escalated")
    if "escalated" in expect_raw and not isinstance(escalated, bool):
        raise _fail(origin, '"escalated" must be true or false')
    return Case(
        id=case_id,
        customer=customer,
        messages=messages,
        expect=Expect(
            lane=lane,
            facts=_strings(expect_raw.get("facts", []), origin=origin, key="facts"),
            absent=_strings(expect_raw.get("absent", []), origin=origin, key="absent"),
            refund_checked="refund" in expect_raw,
            refund=_expected_refund(expect_raw.get("refund"), origin=origin),
            escalated=escalated,
        ),
        origin=origin,
    )


def golden_files(patterns: Iterable[str]) -> list[Path]:
    """Files named by `patterns`: a file, a glob, or a directory (its *.jsonl, sorted)."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(path.glob("*.jsonl"))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not matches:
            raise GoldenFormatError(f"{pattern}: no golden files found")
        found.extend(m for m in matches if m not in found)
    return found


def load_cases(patterns: Iterable[str]) -> list[Case]:
    """Every case in the files named by `patterns`, in file and line order. Ids must be unique
    across all the files (results are reported by id)."""
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for path in golden_files(patterns):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _fail(origin, f"not JSON: {exc}") from exc
            case = parse_case(raw, origin=origin)
            if case.id in seen:
                raise _fail(origin, f"duplicate id {case.id!r} (first at {seen[case.id]})")
            seen[case.id] = origin
            cases.append(case)
    if not cases:
        raise GoldenFormatError("the golden files hold no cases")
    return cases


# --- grading --------------------------------------------------------------------------------------
_DASHES = str.maketrans({"\u2013": "-", "\u2014": "-"})


def normalise(text: str) -> str:
    """The golden format's matching rule: case-insensitive, whitespace runs as one space, en
    and em dashes as "-"."""
    return " ".join(text.translate(_DASHES).split()).casefold()


def contains(haystack: str, needle: str) -> bool:
    return normalise(needle) in normalise(haystack)


@dataclass(frozen=True)
class ActualRefund:
    amount: Decimal
    currency: str
    auto_approved: bool
    state: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "amount": f"{self.amount:.2f}",
            "currency": self.currency,
            "auto_approved": self.auto_approved,
        }


@dataclass(frozen=True)
class Outcome:
    """What a ticket ended as, read from its rows after the last message was answered."""

    lane: str = ""
    reply: str = ""
    # The non-withdrawn refund requests the ticket created, oldest first.
    refunds: tuple[ActualRefund, ...] = ()
    escalated: bool = False
    unapproved: tuple[str, ...] = ()  # executed refunds without an approval: always a failure
    timeout: str = ""  # which message went unanswered in time
    error: str = ""

    @property
    def refund(self) -> ActualRefund | None:
        return self.refunds[-1] if self.refunds else None


@dataclass(frozen=True)
class Grade:
    checks: dict[str, bool]  # per check the case has: lane, facts, refund, escalated, approval
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def _money(refund: ActualRefund | ExpectedRefund) -> str:
    return f"{refund.amount:.2f} {refund.currency} (auto_approved={refund.auto_approved})"


def grade(*, expect: Expect, outcome: Outcome, check_lane: bool = True) -> Grade:
    """Grade one outcome. A case passes when every check it has holds and nothing went wrong
    (no timeout, no error, no refund executed without approval). A timed-out or failed case
    still has its lane graded when the first message was routed; its end-state checks count as
    failed, since the ticket never ended. `check_lane=False` leaves the lane out (the baseline
    sends everything to the agent: there is no routing decision to grade)."""
    checks: dict[str, bool] = {}
    failures: list[str] = []
    unfinished = outcome.timeout or outcome.error
    if outcome.timeout:
        failures.append(f"timeout: {outcome.timeout}")
    if outcome.error:
        failures.append(f"error: {outcome.error}")

    if expect.lane is not None and check_lane:
        checks["lane"] = outcome.lane == expect.lane
        if not checks["lane"]:
            failures.append(f"lane: expected {expect.lane}, got {outcome.lane or 'none'}")

    if expect.checks_reply:
        missing = [f for f in expect.facts if not contains(outcome.reply, f)]
        present = [a for a in expect.absent if contains(outcome.reply, a)]
        checks["facts"] = not (missing or present or unfinished)
        failures.extend(f"fact: missing {f!r}" for f in missing)
        failures.extend(f"absent: found {a!r}" for a in present)

    if expect.refund_checked:
        actual, wanted = outcome.refund, expect.refund
        if len(outcome.refunds) > 1:
            ok = False
            failures.append(f"refund: {len(outcome.refunds)} requests, expected at most one")
        elif wanted is None:
            ok = actual is None
            if actual is not None:
                failures.append(f"refund: expected none, got {_money(actual)}")
        elif actual is None:
            ok = False
            failures.append(f"refund: expected {_money(wanted)}, got none")
        else:
            ok = (actual.amount, actual.currency, actual.auto_approved) == (
                wanted.amount,
                wanted.currency,
                wanted.auto_approved,
            )
            if not ok:
                failures.append(f"refund: expected {_money(wanted)}, got {_money(actual)}")
        checks["refund"] = ok and not unfinished

    if expect.escalated is not None:
        checks["escalated"] = outcome.escalated == expect.escalated and not unfinished
        if outcome.escalated != expect.escalated:
            failures.append(f"escalated: expected {expect.escalated}, got {outcome.escalated}")

    checks["approval"] = not outcome.unapproved
    failures.extend(f"approval: {u}" for u in outcome.unapproved)
    return Grade(checks=checks, failures=tuple(failures))


# --- results and summaries ------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageTiming:
    wall_ms: float  # from ticket_submit to the ticket settling
    model_ms: float  # time inside the model calls made for it (LLMCall.latency_ms)
    calls: int

    @property
    def overhead_ms(self) -> float:
        return self.wall_ms - self.model_ms


@dataclass(frozen=True)
class CaseResult:
    case: Case
    outcome: Outcome
    grade: Grade
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    model_calls: int = 0
    messages: tuple[MessageTiming, ...] = ()

    @property
    def latency_s(self) -> float:
        return sum(m.wall_ms for m in self.messages) / 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "lane": self.outcome.lane,
            "reply": self.outcome.reply,
            "refund": self.outcome.refund.as_json() if self.outcome.refund else None,
            "escalated": self.outcome.escalated,
            "passed": self.grade.passed,
            "failures": list(self.grade.failures),
            "tokens": self.tokens,
            "cost_usd": float(round(self.cost_usd, 6)),
            "latency_s": round(self.latency_s, 3),
            "model_calls": self.model_calls,
        }


def pass_hat_k(passes: Sequence[int], *, n: int, k: int) -> float:
    """tau-bench's pass^k: the chance that k trials of a case, drawn from its n, all pass,
    averaged over cases (unbiased: C(c, k) / C(n, k) for a case that passed c of n). For k = n
    it is the fraction of cases that passed every trial."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n}, got {k}")
    if not passes:
        return 0.0
    return sum(math.comb(c, k) / math.comb(n, k) for c in passes) / len(passes)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


CHECK_NAMES = {
    "lane": "lane_accuracy",
    "facts": "fact_accuracy",
    "refund": "refund_accuracy",
    "escalated": "escalation_accuracy",
}


def summarise(repeats: Sequence[Sequence[CaseResult]]) -> dict[str, Any]:
    """Figures over all repeats (each a list of the same cases). Accuracies and the pass rate
    pool every repeat (the mean over repeats); pass^k is per case across repeats."""
    if not repeats or not repeats[0]:
        raise ValueError("nothing to summarise")
    k = len(repeats)
    results = [r for repeat in repeats for r in repeat]
    summary: dict[str, Any] = {"cases": len(repeats[0]), "repeats": k}
    summary["pass_rate"] = _ratio(sum(r.grade.passed for r in results), len(results))
    for check, name in CHECK_NAMES.items():
        graded = [r.grade.checks[check] for r in results if check in r.grade.checks]
        summary[name] = _ratio(sum(graded), len(graded))
        summary[f"{name.removesuffix('_accuracy')}_checked"] = len(graded) // k
    summary["unapproved_refunds"] = sum(len(r.outcome.unapproved) for r in results)
    summary["timeouts"] = sum(bool(r.outcome.timeout) for r in results)
    summary["errors"] = sum(bool(r.outcome.error) for r in results)

    passes: dict[str, int] = defaultdict(int)
    for r in results:
        passes[r.case.id] += r.grade.passed
    ordered = [passes[r.case.id] for r in repeats[0]]
    summary["pass_hat_k"] = {
        str(j): round(pass_hat_k(ordered, n=k, k=j), 4) for j in range(1, k + 1)
    }
    summary["pass_all_k"] = summary["pass_hat_k"][str(k)]
    summary["passes"] = {r.case.id: passes[r.case.id] for r in repeats[0]}
    summary["per_repeat_pass_rate"] = [
        _ratio(sum(r.grade.passed for r in repeat), len(repeat)) for repeat in repeats
    ]

    tokens = sum(r.tokens for r in results)
    cost = sum((r.cost_usd for r in results), Decimal(0))
    messages = [m for r in results for m in r.messages]
    summary["tokens"] = tokens
    summary["cost_usd"] = float(round(cost, 6))
    summary["cost_per_ticket_usd"] = float(round(cost / len(results), 6))
    summary["model_calls_per_ticket"] = round(sum(r.model_calls for r in results) / len(results), 3)
    summary["overhead_ms_p50"] = round(percentile([m.overhead_ms for m in messages], 50), 1)
    summary["overhead_ms_p95"] = round(percentile([m.overhead_ms for m in messages], 95), 1)

    by_lane: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_lane[r.outcome.lane or "none"].append(r)
    summary["lanes"] = {lane: _lane_figures(rows) for lane, rows in sorted(by_lane.items())}
    return summary


def _lane_figures(rows: Sequence[CaseResult]) -> dict[str, Any]:
    tokens = [float(r.tokens) for r in rows]
    costs = [float(r.cost_usd) for r in rows]
    latencies = [m.wall_ms / 1000 for r in rows for m in r.messages]
    return {
        "tickets": len(rows),
        "pass_rate": _ratio(sum(r.grade.passed for r in rows), len(rows)),
        "tokens_p50": round(percentile(tokens, 50)),
        "tokens_p95": round(percentile(tokens, 95)),
        "cost_usd_total": round(sum(costs), 6),
        "cost_usd_p50": round(percentile(costs, 50), 6),
        "cost_usd_p95": round(percentile(costs, 95), 6),
        # Per message: what a customer waits for each answer.
        "latency_s_p50": round(percentile(latencies, 50), 3),
        "latency_s_p95": round(percentile(latencies, 95), 3),
    }


@dataclass(frozen=True)
class Thresholds:
    pass_rate: float
    lane_accuracy: float
    refund_accuracy: float
    escalation_accuracy: float

    @classmethod
    def from_settings(cls) -> Thresholds:
        from django.conf import settings

        return cls(
            pass_rate=settings.EVAL_MIN_PASS_RATE,
            lane_accuracy=settings.EVAL_MIN_LANE_ACCURACY,
            refund_accuracy=settings.EVAL_MIN_REFUND_ACCURACY,
            escalation_accuracy=settings.EVAL_MIN_ESCALATION_ACCURACY,
        )


def below_thresholds(summary: dict[str, Any], thresholds: Thresholds) -> list[str]:
    """Which figures are below their minimum. A figure with nothing to grade (no case checks
    refunds, say) cannot fail; any executed refund without approval always does."""
    problems = []
    for name, minimum in asdict(thresholds).items():
        value = summary.get(name)
        if value is not None and value < minimum:
            problems.append(f"{name} {value:.3f} < {minimum:.3f}")
    if summary.get("unapproved_refunds"):
        problems.append(f"{summary['unapproved_refunds']} refund(s) executed without approval")
    return problems


def report(
    repeats: Sequence[Sequence[CaseResult]], *, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """The `--json` document: the summary, and the cases of the last repeat (each with how many
    repeats it passed)."""
    summary = summarise(repeats)
    if thresholds is not None:
        summary["thresholds"] = asdict(thresholds)
        summary["below_thresholds"] = below_thresholds(summary, thresholds)
    cases = []
    for result in repeats[-1]:
        row = result.as_json()
        row["passes"] = summary["passes"][result.case.id]
        cases.append(row)
    return {"summary": summary, "cases": cases}


def format_table(document: dict[str, Any]) -> str:
    """A readable rendering of `report`'s document."""
    summary, cases = document["summary"], document["cases"]
    k = summary["repeats"]
    width = max([len(c["id"]) for c in cases] + [4])
    lines = [
        f"{'case':<{width}}  {'lane':<6}  {'pass':<5}  {'tokens':>7}  {'cost $':>9}  {'secs':>6}  "
        "failures"
    ]
    for c in cases:
        passed = f"{c['passes']}/{k}" if k > 1 else ("yes" if c["passed"] else "NO")
        lines.append(
            f"{c['id']:<{width}}  {c['lane'] or '-':<6}  {passed:<5}  {c['tokens']:>7}  "
            f"{c['cost_usd']:>9.5f}  {c['latency_s']:>6.2f}  {'; '.join(c['failures'])}"
        )
    lines.append("")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines.append(
        f"{summary['cases']} cases x {k} repeat(s): pass rate {fmt(summary['pass_rate'])}, "
        f"pass^{k} {fmt(summary['pass_all_k'])}"
        + (f" (pass^k {summary['pass_hat_k']})" if k > 1 else "")
    )
    lines.append(
        f"lane {fmt(summary['lane_accuracy'])}, facts {fmt(summary['fact_accuracy'])}, "
        f"refund {fmt(summary['refund_accuracy'])}, "
        f"escalation {fmt(summary['escalation_accuracy'])}; "
        f"timeouts {summary['timeouts']}, errors {summary['errors']}, "
        f"refunds executed without approval {summary['unapproved_refunds']}"
    )
    lines.append(
        f"tokens {summary['tokens']}, cost ${summary['cost_usd']:.4f} "
        f"(${summary['cost_per_ticket_usd']:.5f}/ticket, "
        f"{summary['model_calls_per_ticket']} model calls/ticket); overhead per message "
        f"p50 {summary['overhead_ms_p50']} ms, p95 {summary['overhead_ms_p95']} ms"
    )
    for lane, f in summary["lanes"].items():
        lines.append(
            f"  {lane:<6} {f['tickets']:>3} tickets  pass {fmt(f['pass_rate'])}  "
            f"tokens p50/p95 {f['tokens_p50']}/{f['tokens_p95']}  "
            f"cost p50/p95 ${f['cost_usd_p50']:.5f}/${f['cost_usd_p95']:.5f}  "
            f"latency p50/p95 {f['latency_s_p50']:.2f}/{f['latency_s_p95']:.2f} s"
        )
    for problem in summary.get("below_thresholds", []):
        lines.append(f"BELOW THRESHOLD: {problem}")
    return "\n".join(lines)


# --- the world the cases run in (needs Django) ----------------------------------------------------
BACKGROUND_MIN_AGE_DAYS = 200  # older than every refund window (the longest is 180 days)


def background_customers(limit: int = 4) -> list[Any]:
    """Background customers for cases with "customer": null (the one of `background_customer`
    first): in the US paying in dollars, active, nothing disputed and nothing the refund policy
    would refund today, so generic questions get generic answers. Several, so such cases can be
    played side by side."""
    from django.utils import timezone

    from billing import policy
    from billing.models import Customer

    first = background_customer()
    now = timezone.now()
    found = [first]
    candidates = (
        Customer.objects.filter(
            ref__startswith="cus_bg_", currency="USD", country="US", subscriptions__status="active"
        )
        .exclude(pk=first.pk)
        .distinct()
        .order_by("ref")
    )
    for customer in candidates:
        charges = list(customer.charges.all())
        if charges and not any(
            c.disputed_at or policy.evaluate_refund(charge=c, at=now).refundable for c in charges
        ):
            found.append(customer)
        if len(found) == limit:
            break
    return found


def background_customer() -> Any:
    """The signed-in ordinary customer for cases with "customer": null: the first background
    customer (by reference, so the same one for every seed day) in the US paying in dollars,
    with an active subscription, no dispute, and every charge older than any refund window, so
    nothing of theirs is refundable and generic questions get generic answers."""
    from django.db.models import Exists, OuterRef, Q
    from django.utils import timezone

    from billing.models import Charge, Customer, Subscription

    cutoff = timezone.now() - dt.timedelta(days=BACKGROUND_MIN_AGE_DAYS)
    recent = Charge.objects.filter(customer=OuterRef("pk")).filter(
        Q(charged_at__gte=cutoff) | Q(disputed_at__isnull=False)
    )
    inactive = Subscription.objects.filter(customer=OuterRef("pk")).exclude(status="active")
    customer = (
        # US dollars without VAT: the currency and tax most generic answers (and facts) assume.
        Customer.objects.filter(
            ref__startswith="cus_bg_", charges__isnull=False, currency="USD", country="US"
        )
        .distinct()
        .exclude(Exists(recent))
        .exclude(Exists(inactive))
        .order_by("ref")
        .first()
    )
    if customer is None:
        raise RuntimeError("no background customer without refundable history; run seed_demo")
    return customer


def reset_customer(customer: Any) -> None:
    """Put `customer` back to the seeded world: their support tickets (runs, escalations, guard
    records), conversations (and their hot copies), memories, then what billing holds for them
    (`billing.demo.demo_customer_reset`). Tickets go first: they point at refund requests."""
    from django.db import IntegrityError

    from billing.demo import demo_customer_reset
    from memory import hot
    from memory.models import Conversation
    from memory.services import customer_memories_delete_all
    from support.models import Ticket

    for attempt in range(10):
        try:
            # A refund's news can still be arriving from the worker (an auto-approved refund
            # executes after the reply): try again once it has landed.
            Ticket.objects.filter(customer=customer).delete()
            break
        except IntegrityError:
            if attempt == 9:
                raise
            time.sleep(0.5)
    conversations = Conversation.objects.filter(customer=customer)
    for conversation in conversations:
        hot.drop(conversation=conversation)
    conversations.delete()
    customer_memories_delete_all(customer=customer)
    demo_customer_reset(email=customer.email)


def _semantic_cache_clear() -> None:
    # Each repeat is an independent trial: an answer cached by the previous one would make the
    # next repeat's FAQ answers copies instead of samples.
    from memory.models import SemanticCacheEntry

    SemanticCacheEntry.objects.all().delete()


class ReleaseSpecError(ValueError):
    """A --release/--compare value names no release this command can find."""


@dataclass(frozen=True)
class ReleaseSpec:
    """A release to evaluate: its name and the pins laid over the repo's own (support/releases.py
    `release_create`: a prompt or tier it does not name runs as the repo has it)."""

    name: str
    prompt_versions: dict[str, int] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt_versions": dict(self.prompt_versions),
            "model_ids": dict(self.model_ids),
        }


def release_spec(value: str) -> ReleaseSpec:
    """A release from the command line: inline JSON (`{"name": "r2", "model_ids": {"small":
    ...}, "prompt_versions": {"faq_answer": 2}}`), a path to such a JSON file, "r1" or "repo"
    (what the repo runs), or the name of a release in the configured database (read there once;
    the cases run in a scratch database)."""
    text = value.strip()
    raw: object
    if text.startswith("{"):
        raw = _json_spec(text, origin="--release JSON")
    elif Path(text).is_file():
        raw = _json_spec(Path(text).read_text(encoding="utf-8"), origin=text)
    elif text in ("r1", "repo"):
        return ReleaseSpec(name="r1")
    else:
        raw = _release_from_database(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ReleaseSpecError(f"{value!r}: a release needs a name")
    prompts, models = raw.get("prompt_versions", {}), raw.get("model_ids", {})
    if not isinstance(prompts, dict) or not isinstance(models, dict):
        raise ReleaseSpecError(f"{value!r}: prompt_versions and model_ids must be objects")
    try:
        return ReleaseSpec(
            name=raw["name"],
            prompt_versions={str(k): int(v) for k, v in prompts.items()},
            model_ids={str(k): str(v) for k, v in models.items()},
        )
    except (TypeError, ValueError) as exc:
        raise ReleaseSpecError(f"{value!r}: prompt versions must be integers") from exc


def _json_spec(text: str, *, origin: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ReleaseSpecError(f"{origin}: not JSON: {exc}") from exc


def _release_from_database(name: str) -> dict[str, Any]:
    from django.db import DatabaseError

    from support.models import Release

    try:
        row = Release.objects.filter(name=name).first()
    except DatabaseError as exc:
        raise ReleaseSpecError(
            f"release {name!r}: the configured database cannot be read ({type(exc).__name__}); "
            "give the release as JSON instead"
        ) from exc
    if row is None:
        raise ReleaseSpecError(f"no release named {name!r} in the configured database")
    return {"name": row.name, "prompt_versions": row.prompt_versions, "model_ids": row.model_ids}


def release_install(spec: ReleaseSpec) -> Any:
    """Make `spec` the current release of the (scratch) database: made from the repo's own
    release (r1) with the spec's pins laid over it the first time, promoted again afterwards
    (another repeat, or after the release it is compared with). Raises ReleaseSpecError for a
    prompt version or model the repo cannot serve."""
    from support import releases
    from support.models import Release, ReleaseState

    repo = Release.objects.filter(name=releases.SEED_NAME).first() or releases.release_current()
    existing = Release.objects.filter(name=spec.name).first()
    try:
        if existing is None:
            existing = releases.release_create(
                name=spec.name,
                actor="evaluate",
                prompt_versions=spec.prompt_versions,
                model_ids=spec.model_ids,
                based_on=repo,
            )
        pinned = {**existing.prompt_versions, **existing.model_ids}
        if any(pinned.get(k) != v for k, v in {**spec.prompt_versions, **spec.model_ids}.items()):
            raise ReleaseSpecError(
                f"release {spec.name!r} exists with other pins: give the candidate another name"
            )
        if existing.state != ReleaseState.CURRENT:
            existing = releases.release_promote(release=existing, actor="evaluate")
    except releases.ReleaseError as exc:
        raise ReleaseSpecError(f"release {spec.name!r}: {exc}") from exc
    return existing


def compare_reports(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The differences between two reports of the same cases (`second` minus `first`): the
    headline figures, each lane's cost and latency, and the cases that passed under one and
    failed under the other."""
    a, b = first["summary"], second["summary"]
    figures: dict[str, Any] = {}
    for key in COMPARED:
        x, y = a.get(key), b.get(key)
        delta = None if x is None or y is None else round(y - x, 6)
        figures[key] = {"a": x, "b": y, "delta": delta}
    lanes: dict[str, Any] = {}
    for lane in sorted(set(a["lanes"]) | set(b["lanes"])):
        la, lb = a["lanes"].get(lane, {}), b["lanes"].get(lane, {})
        lanes[lane] = {
            key: {"a": la.get(key), "b": lb.get(key)}
            for key in ("tickets", "pass_rate", "cost_usd_p50", "latency_s_p50", "latency_s_p95")
        }
    cases = [
        {"id": case, "a": a["passes"].get(case), "b": b["passes"].get(case)}
        for case in a["passes"]
        if a["passes"].get(case) != b["passes"].get(case)
    ]
    return {"figures": figures, "lanes": lanes, "cases": cases}


COMPARED = (
    "pass_rate",
    "lane_accuracy",
    "fact_accuracy",
    "refund_accuracy",
    "escalation_accuracy",
    "cost_per_ticket_usd",
    "model_calls_per_ticket",
    "tokens",
    "overhead_ms_p50",
    "overhead_ms_p95",
    "timeouts",
    "errors",
    "unapproved_refunds",
)


def format_comparison(names: tuple[str, str], differences: dict[str, Any]) -> str:
    """A readable rendering of `compare_reports`' differences."""
    first, second = names

    def fmt(value: object) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    width = max(len(k) for k in COMPARED)
    lines = [f"differences ({second} minus {first}):"]
    lines.append(f"{'figure':<{width}}  {first:>12}  {second:>12}  {'delta':>12}")
    for key, f in differences["figures"].items():
        lines.append(f"{key:<{width}}  {fmt(f['a']):>12}  {fmt(f['b']):>12}  {fmt(f['delta']):>12}")
    for lane, f in differences["lanes"].items():
        lines.append(
            f"  {lane:<6} latency p95 {fmt(f['latency_s_p95']['a'])} -> "
            f"{fmt(f['latency_s_p95']['b'])} s, cost p50 ${fmt(f['cost_usd_p50']['a'])} -> "
            f"${fmt(f['cost_usd_p50']['b'])}, pass {fmt(f['pass_rate']['a'])} -> "
            f"{fmt(f['pass_rate']['b'])}"
        )
    if differences["cases"]:
        lines.append("cases passing under one release only (passes a -> b):")
        lines.extend(f"  {c['id']}: {c['a']} -> {c['b']}" for c in differences["cases"])
    else:
        lines.append("every case passed or failed alike under both")
    return "\n".join(lines)


@dataclass(frozen=True)
class RunOptions:
    seed: int = 1
    baseline: bool = False
    release: ReleaseSpec | None = None  # None: whatever is current (r1, as the repo has it)
    fault_rate: float = 0.03
    timeout_s: float = 60.0
    concurrency: int = 4
    worker_concurrency: int = 4
    env: dict[str, str] = field(default_factory=dict)  # more worker environment (latency, ...)


def _calls(ticket_pk: int, *, after: int = 0) -> list[dict[str, Any]]:
    from ledgerly.llm.models import LLMCall

    rows = (
        LLMCall.objects.filter(ticket_id=str(ticket_pk), pk__gt=after)
        .order_by("pk")
        .values(
            "pk",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cost_usd",
            "latency_ms",
            "attempts",
        )
    )
    return [dict(row) for row in rows]


def _settled(ticket_pk: int) -> bool:
    from support.models import Ticket
    from support.selectors import ticket_settled

    return bool(ticket_settled(ticket=Ticket.objects.select_related("run").get(pk=ticket_pk)))


def _run_updated_at(ticket_pk: int) -> dt.datetime | None:
    # The runner stamps the run when it commits a step, the answer included.
    from support.models import Run

    return Run.objects.filter(ticket_id=ticket_pk).values_list("updated_at", flat=True).first()


def _wait_for_refunds_to_finish(ticket_pk: int, *, timeout_s: float) -> None:
    """An approved request executes after the reply (billing's task); wait for it so the
    approval check sees the executed state and the next case's reset finds the world quiet."""
    from billing.models import RefundRequest

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = RefundRequest.objects.filter(source=f"ticket:{ticket_pk}", state="approved")
        if not busy.exists():
            return
        time.sleep(0.1)


def _outcome(*, ticket_pk: int, customer: Any, since: dt.datetime) -> Outcome:
    from django.db.models import Q

    from billing.models import Refund, RefundRequest
    from support.models import Escalation, Ticket

    ticket = Ticket.objects.get(pk=ticket_pk)
    source = f"ticket:{ticket_pk}"
    requests = RefundRequest.objects.filter(source=source).order_by("created_at", "pk")
    refunds = tuple(
        ActualRefund(
            amount=r.amount, currency=r.currency, auto_approved=r.auto_approved, state=r.state
        )
        for r in requests
        if r.state != WITHDRAWN
    )
    # Every request this case could have caused: the ticket's, and any other made for the
    # customer meanwhile that no other ticket claims (a request with no source, say).
    mine = RefundRequest.objects.filter(customer=customer).filter(
        Q(source=source) | (Q(created_at__gte=since) & ~Q(source__startswith="ticket:"))
    )
    unapproved = [
        f"refund request #{r.pk} ({r.amount} {r.currency}) is {r.state} without an approval"
        for r in mine.filter(Q(state="executed") | Q(refund__isnull=False)).distinct()
        if not (r.auto_approved or r.decided_by_id)
    ]
    unapproved += [
        f"refund {ref} moved money without a refund request"
        for ref in Refund.objects.filter(
            charge__customer=customer, refund_request__isnull=True, created_at__gte=since
        ).values_list("ref", flat=True)
    ]
    escalated = Escalation.objects.filter(
        ticket_id=ticket_pk, state__in=LIVE_ESCALATION_STATES
    ).exists()
    return Outcome(
        lane=ticket.first_lane or "",
        reply=ticket.reply or "",
        refunds=refunds,
        escalated=escalated,
        unapproved=tuple(unapproved),
    )


class Cancelled(Exception):
    """The evaluation is being stopped (Ctrl-C, SIGTERM): a case stops waiting at once."""


def run_case(
    case: Case,
    *,
    customer: Any,
    timeout_s: float,
    cancel: threading.Event | None = None,
    check_lane: bool = True,
) -> CaseResult:
    """Play one case from the seeded world and grade what its ticket ended as. Never raises for
    the system under test's failures: a timeout or an error is a graded failure. Raises
    Cancelled when `cancel` is set while it waits."""
    from django.utils import timezone

    from support.services import ticket_submit

    reset_customer(customer)
    since = timezone.now()
    ticket: Any = None
    timings: list[MessageTiming] = []
    last_call = 0
    timeout = error = ""
    for index, text in enumerate(case.messages, start=1):
        started, submitted_at = time.monotonic(), timezone.now()
        settled_at = None
        try:
            ticket = ticket_submit(customer=customer, text=text, channel="api", ticket=ticket)
            deadline = started + timeout_s
            pause = 0.02
            while not _settled(ticket.pk):
                if cancel is not None and cancel.is_set():
                    raise Cancelled(case.id)
                if time.monotonic() > deadline:
                    timeout = (
                        f"message {index} of {len(case.messages)} not answered in {timeout_s:g} s"
                    )
                    break
                # Backing off keeps four pollers from loading the database they measure.
                time.sleep(pause)
                pause = min(pause * 1.5, 0.25)
            else:
                settled_at = _run_updated_at(ticket.pk)
        except Cancelled:
            raise
        except Exception as exc:  # the system under test failed: graded, not fatal
            logger.exception("case %s: message %d failed", case.id, index)
            error = f"message {index}: {type(exc).__name__}: {exc}"[:500]
        wall_ms = (time.monotonic() - started) * 1000
        if settled_at is not None and settled_at > submitted_at:
            # When the run committed the answer, not when a poll noticed it.
            wall_ms = min(wall_ms, (settled_at - submitted_at).total_seconds() * 1000)
        if ticket is not None:
            calls = _calls(ticket.pk, after=last_call)
            if calls:
                last_call = calls[-1]["pk"]
            timings.append(
                MessageTiming(
                    wall_ms=wall_ms,
                    model_ms=float(sum(c["latency_ms"] for c in calls)),
                    calls=len(calls),
                )
            )
        if timeout or error:
            break

    if ticket is None:
        outcome = Outcome(error=error or "no ticket was created")
        return CaseResult(
            case=case,
            outcome=outcome,
            grade=grade(expect=case.expect, outcome=outcome, check_lane=check_lane),
        )
    if not (timeout or error):
        _wait_for_refunds_to_finish(ticket.pk, timeout_s=min(timeout_s, 15.0))
    outcome = _outcome(ticket_pk=ticket.pk, customer=customer, since=since)
    outcome = replace(outcome, timeout=timeout, error=error)
    calls = _calls(ticket.pk)
    return CaseResult(
        case=case,
        outcome=outcome,
        grade=grade(expect=case.expect, outcome=outcome, check_lane=check_lane),
        tokens=sum(
            c["input_tokens"]
            + c["output_tokens"]
            + c["cache_creation_input_tokens"]
            + c["cache_read_input_tokens"]
            for c in calls
        ),
        cost_usd=sum((c["cost_usd"] for c in calls), Decimal(0)),
        model_calls=sum(1 for c in calls if c["attempts"] > 0),
        messages=tuple(timings),
    )


def schedule(cases: Sequence[Case], *, anonymous: int = 1) -> list[list[Case]]:
    """Cases grouped by customer (a group runs in order, one case at a time), biggest group
    first, so that a pool of threads finishes as early as it can (longest job first). Cases
    with "customer": null are spread over `anonymous` groups (one background customer each)."""
    groups: dict[str, list[Case]] = defaultdict(list)
    spread = 0
    for case in cases:
        if case.customer is None:
            groups[anonymous_key(spread % max(anonymous, 1))].append(case)
            spread += 1
        else:
            groups[case.customer].append(case)
    return sorted(groups.values(), key=lambda group: -sum(len(c.messages) for c in group))


def anonymous_key(index: int) -> str:
    return f"(background customer {index})"


class World:
    """A scratch database with the demo world, and the workers that serve it.

    Use as a context manager: on entry it creates, migrates and seeds a scratch database on the
    configured Postgres (the settings' database stays untouched), on exit it drops it. `run`
    plays cases against a fresh worker per repeat.
    """

    def __init__(self, *, log: Any = None) -> None:
        self._log = log or sys.stderr
        self._old_name: str | None = None
        self.database_url = ""

    def say(self, message: str) -> None:
        print(f"[evaluate] {message}", file=self._log, flush=True)

    def __enter__(self) -> World:
        from django.core.management import call_command, get_commands
        from django.db import connection

        from ledgerly.testing.worker import database_url_for

        t0 = time.monotonic()
        self._old_name = connection.settings_dict["NAME"]
        test = connection.settings_dict.setdefault("TEST", {})
        test["NAME"] = f"ledgerly_eval_{os.getpid()}"
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        self.database_url = database_url_for(connection.settings_dict)
        out = self._log
        call_command("seed_demo", stdout=out)
        call_command("ingest_helpcenter", stdout=out)
        if "seed_router_exemplars" in get_commands():
            call_command("seed_router_exemplars", stdout=out)
        else:  # the router then decides by rules and the small model only
            self.say("warning: no seed_router_exemplars command; router exemplars not seeded")
        self.say(f"scratch database {test['NAME']} ready in {time.monotonic() - t0:.1f} s")
        return self

    def __exit__(self, *exc: object) -> None:
        from django.db import connection, connections

        connections.close_all()
        if self._old_name is not None:
            connection.creation.destroy_test_db(self._old_name, verbosity=0)

    @contextmanager
    def workers(self, options: RunOptions) -> Iterator[None]:
        """A Celery worker (threads pool) and beat for one repeat, with its simulator seed."""
        from ledgerly.testing.worker import WorkerProcess

        env = {
            "LLM_SIMULATOR_SEED": str(options.seed),
            "LLM_SIMULATOR_FAULT_RATE": str(options.fault_rate),
            "SUPPORT_BASELINE": "1" if options.baseline else "0",
            # The baseline is the naive deployment: no answer cache and no prompt caching.
            **({"LLM_PROMPT_CACHING": "0"} if options.baseline else {}),
            **options.env,
        }
        worker = WorkerProcess(
            database_url=self.database_url, concurrency=options.worker_concurrency, env=env
        )
        beat_dir = Path(tempfile.mkdtemp(prefix="ledgerly-eval-beat-"))
        beat: subprocess.Popen[bytes] | None = None
        try:
            worker.start(timeout=60)
            with (beat_dir / "beat.log").open("wb") as beat_log:
                beat = subprocess.Popen(  # noqa: S603 — our own interpreter and module
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "ledgerly",
                        "beat",
                        "--loglevel",
                        "WARNING",
                        "--schedule",
                        str(beat_dir / "schedule"),
                    ],
                    cwd=ROOT,
                    env=worker.env,
                    stdout=beat_log,
                    stderr=beat_log,
                )
            yield
        finally:
            # Also when interrupted while starting: nothing of ours may outlive the run.
            if beat is not None:
                beat.terminate()
                try:
                    beat.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    beat.kill()
            worker.stop()
            if worker.proc is not None and worker.proc.returncode not in (0, -15, None):
                self.say(f"worker exited with {worker.proc.returncode}: {worker.output()[-2000:]}")
            shutil.rmtree(beat_dir, ignore_errors=True)

    def run(self, cases: Sequence[Case], *, options: RunOptions) -> list[CaseResult]:
        """Play every case once against a fresh worker; results in the cases' order."""
        from django.db import connections

        from billing.models import Customer

        customers: dict[str, Any] = {
            email: Customer.objects.get(email=email)
            for email in {c.customer for c in cases}
            if email
        }
        anonymous = background_customers()
        for index, customer in enumerate(anonymous):
            customers[anonymous_key(index)] = customer
        groups = schedule(cases, anonymous=len(anonymous))
        keyed = {
            (group[0].customer or anonymous_key(i)): group
            for i, group in enumerate(g for g in groups if g[0].customer is None)
        }
        results: dict[str, CaseResult] = {}
        lock = threading.Lock()
        done = [0]
        cancel = threading.Event()

        def play(group: list[Case]) -> None:
            try:
                for case in group:
                    if cancel.is_set():
                        return
                    key = case.customer or next(
                        k for k, members in keyed.items() if case in members
                    )
                    result = run_case(
                        case,
                        customer=customers[key],
                        timeout_s=options.timeout_s,
                        cancel=cancel,
                        check_lane=not options.baseline,
                    )
                    with lock:
                        results[case.id] = result
                        done[0] += 1
                        mark = "pass" if result.grade.passed else "FAIL"
                        self.say(
                            f"[{done[0]}/{len(cases)}] {case.id}: {mark} "
                            + "; ".join(result.grade.failures)
                        )
            finally:
                connections.close_all()

        mode = "baseline" if options.baseline else "pipeline"
        if options.release is not None:
            installed = release_install(options.release)
            mode += f", release {installed.name}"
        self.say(f"{mode}: {len(cases)} cases, simulator seed {options.seed}")
        with self.workers(options):
            self._warm_up(options)
            _semantic_cache_clear()
            with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
                futures = [pool.submit(play, group) for group in groups]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    # Ctrl-C or a harness bug: the other cases stop waiting, so the worker
                    # and beat are stopped and the scratch database dropped promptly.
                    cancel.set()
                    raise
        return [results[c.id] for c in cases]

    def _warm_up(self, options: RunOptions) -> None:
        """One ticket through the fresh worker before the cases, so its first imports, model
        loads and connections are not timed as the first case's latency."""
        from support.services import ticket_submit

        customer = background_customer()
        t0 = time.monotonic()
        ticket = ticket_submit(customer=customer, text="Hello, which plans do you offer?")
        while not _settled(ticket.pk) and time.monotonic() - t0 < options.timeout_s:
            time.sleep(0.05)
        reset_customer(customer)
        self.say(f"worker warmed up in {time.monotonic() - t0:.1f} s")

    def repeat(
        self, cases: Sequence[Case], *, repeats: int, options: RunOptions
    ) -> list[list[CaseResult]]:
        """`repeats` independent runs, repeat k with simulator seed k + 1."""
        return [self.run(cases, options=replace(options, seed=k + 1)) for k in range(repeats)]


def options_from_settings(**overrides: Any) -> RunOptions:
    from django.conf import settings

    values: dict[str, Any] = {
        "fault_rate": settings.EVAL_SIMULATOR_FAULT_RATE,
        "timeout_s": settings.EVAL_MESSAGE_TIMEOUT_SECONDS,
        "concurrency": settings.EVAL_CONCURRENCY,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RunOptions(**values)
