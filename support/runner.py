"""The run engine: take one step of a run, commit it with its checkpoint, queue the next.

A step is claimed by a conditional update (ready → running, or running with an expired lease
→ running under a new lease), computed with no transaction open (it may call a model), and
committed under another conditional update on the step counter. A duplicate delivery finds the
step claimed or already committed and does nothing; a worker killed mid-step leaves a lease
that expires, and the redelivered task or the sweeper takes the step over. So a step's side
effects are committed once (replies, escalations, state) or are idempotent by key (refund
requests); a model call of a lost step may be paid twice, never acted on twice.

Bound on resuming a killed worker's step: the lease (SUPPORT_STEP_LEASE_SECONDS, 90 s) plus one
sweep (SUPPORT_SWEEP_EVERY_SECONDS, 10 s), so at most ~100 s with the defaults; the broker's own
redelivery (visibility timeout, 300 s) is the second net.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import traceback
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.models import RefundRequest
from ledgerly import llm
from memory import services as memory_services
from memory.models import Message, MessageRole
from support import guard, live, router, services, telemetry
from support.lanes import agent, faq, refund
from support.models import (
    DeadLetter,
    GuardIntervention,
    KillSwitch,
    KillSwitchScope,
    Lane,
    ReleaseState,
    Run,
    RunOutcome,
    RunStatus,
    RunStep,
    ShadowOutput,
    Ticket,
    TicketState,
)
from support.releases import pins_of, release_current, run_release_assign
from support.steps import EscalationDraft, Reply, StepEnv, StepOutcome, enqueue_step

log = structlog.get_logger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"

HUMAN_REPLY = (
    "Of course. I've passed your conversation to a human on our support team, who will reply "
    "here. Staff work Monday to Friday, 08:00-18:00 CET."
)
PAUSED_REPLY = (
    "Our automated assistant is paused at the moment, so a human on our support team will "
    "answer you here. Staff work Monday to Friday, 08:00-18:00 CET."
)
UNAVAILABLE_REPLY = (
    "I'm sorry, I can't prepare an answer right now. I've passed your message to a human on our "
    "support team, who will reply here."
)
WITH_STAFF_REPLY = (
    "Thanks, I've added this to your conversation with our support team; a member of the team "
    "will reply here. Staff work Monday to Friday, 08:00-18:00 CET."
)
CLARIFY_REPLY = (
    "Thanks for getting in touch. So I can help: is this about a charge or refund on your "
    "account, a question about how Ledgerly billing works, or something else?"
)

# --- claiming and committing -------------------------------------------------------------------


class StepLost(Exception):
    """The run moved on while this step was computed (another worker took it over)."""


def claim(*, run_id: int, step: int, now: dt.datetime | None = None) -> bool:
    """Take run `run_id`'s step `step` for this worker, if nobody holds it."""
    now = now or timezone.now()
    lease = now + dt.timedelta(seconds=settings.SUPPORT_STEP_LEASE_SECONDS)
    claimable = (
        Q(status=RunStatus.READY)
        | Q(status=RunStatus.RUNNING, lease_until__lt=now)
        | Q(status=RunStatus.WAITING, wake_at__lte=now)  # its countdown came before the sweep
    )
    return (
        Run.objects.filter(claimable, pk=run_id, step=step).update(
            status=RunStatus.RUNNING, lease_until=lease, lease_owner=WORKER, updated_at=now
        )
        == 1
    )


def _pending_message(
    ticket: Ticket, answered_through: int, until: int | None = None
) -> Message | None:
    """The next customer message to answer (a shadow run answers only up to `until`)."""
    messages = Message.objects.filter(
        conversation_id=ticket.conversation_id, role=MessageRole.CUSTOMER, seq__gt=answered_through
    )
    if until is not None:
        messages = messages.filter(seq__lte=until)
    return messages.order_by("seq").first()


def _ticket_of(run: Run) -> Ticket:
    """A live run's ticket, or the ticket its live run works (a shadow run has none)."""
    ticket = run.ticket if run.shadow_of_id is None else run.shadow_of.ticket  # type: ignore[union-attr]
    if ticket is None:
        raise ValueError(f"run {run.pk} has no ticket")
    return ticket


def _live_refund_request(ticket: Ticket, pk: int | None) -> RefundRequest | None:
    pk = pk or ticket.refund_request_id
    if not pk:
        return None
    return RefundRequest.objects.filter(pk=pk, customer_id=ticket.customer_id).first()


def _guarded(env: StepEnv, lane: str, reply: Reply, refund_request_id: int | None) -> Reply:
    """Every reply passes the guard; a violating draft is regenerated once (FAQ and agent
    drafts come from a model), then replaced by a safe reply. Each intervention is recorded."""
    # (A shadow's refund request was a dry run, rolled back: its reply is checked against the
    # rows as they are, which is what the customer would have been held to.)
    request = _live_refund_request(env.ticket, refund_request_id)
    verdict = guard.check(text=reply.text, customer=env.customer, refund_request=request)
    if verdict.ok:
        return reply
    if lane in (Lane.FAQ, Lane.AGENT):
        _intervention(
            env,
            ticket=env.ticket,
            lane=lane,
            draft=reply.text,
            violations=verdict.violations,
            action="regenerated",
        )
        try:
            redraft = env.complete(
                tier="small" if lane == Lane.FAQ else "large",
                purpose="reply_redraft",
                prompt="reply_redraft",
                messages=[
                    {
                        "role": "user",
                        "content": f"<draft>\n{reply.text}\n</draft>\n"
                        f"<problems>\n" + "\n".join(verdict.violations) + "\n</problems>",
                    }
                ],
                max_tokens=600,
                fallback="none",
            )
            again = guard.check(text=redraft.text, customer=env.customer, refund_request=request)
            if again.ok and redraft.text.strip():
                return Reply(redraft.text.strip(), reply.sources)
            verdict = again
        except llm.LLMError:  # ModelUnavailable included
            pass
    _intervention(
        env,
        ticket=env.ticket,
        lane=lane or "",
        draft=reply.text,
        violations=verdict.violations,
        action="replaced",
    )
    log.warning("support.reply_replaced", ticket=env.ticket.pk, violations=verdict.violations)
    return Reply(guard.safe_reply(refund_request=request))


def _intervention(env: StepEnv, **fields: Any) -> None:
    """Record a reply-guard intervention; a shadow run's goes to its own record instead."""
    if env.shadow:
        env.dry_runs.append(
            {"guard": {k: v for k, v in fields.items() if k != "ticket"}, "service": "guard"}
        )
        return
    GuardIntervention.objects.create(**fields)
    telemetry.guard_intervened(lane=str(fields.get("lane") or ""), action=str(fields["action"]))


def _outcome(escalation: EscalationDraft | None) -> str:
    """How a settled message ended, for the release metrics (support/releases.py)."""
    if escalation is None:
        return RunOutcome.COMPLETED
    if escalation.reason == "model_unavailable":
        return RunOutcome.ERROR
    if escalation.reason.startswith("cap"):
        return RunOutcome.CAPPED
    return RunOutcome.ESCALATED


def _settle(run: Run, outcome: str) -> None:
    """The run's first settled message sets its latency and outcome; a later error or cap
    overrides the outcome (the ticket did not end well)."""
    now = timezone.now()
    Run.objects.filter(pk=run.pk, settled_at__isnull=True).update(settled_at=now, outcome=outcome)
    if outcome in (RunOutcome.ERROR, RunOutcome.CAPPED):
        Run.objects.filter(pk=run.pk).exclude(outcome=RunOutcome.ERROR).update(outcome=outcome)


def _shadow_commit(
    *,
    run: Run,
    step: int,
    checkpoint: dict[str, Any],
    status: str,
    reply: Reply | None,
    escalation: EscalationDraft | None,
    kind: str,
    detail: dict[str, Any],
    tokens: int,
    cost: Decimal,
    enqueue: bool,
) -> None:
    """A shadow step's commit: what it would have sent goes to a ShadowOutput row; nothing to
    the conversation, the ticket or the escalations. Runs inside _commit's transaction."""
    live_run, release = run.shadow_of, run.release
    if live_run is None or release is None:
        raise ValueError(f"run {run.pk} is no shadow run")
    if reply is not None or escalation is not None:
        ShadowOutput.objects.create(
            run=run,
            live_run=live_run,
            release=release,
            message_seq=int(checkpoint.get("message_seq", 0)),
            step=step,
            kind=kind,
            lane=str(checkpoint.get("lane") or "")[:8],
            next="" if status == RunStatus.READY else kind,
            reply="" if reply is None else reply.text,
            sources=[] if reply is None else reply.sources,
            escalation={}
            if escalation is None
            else {"reason": escalation.reason, "detail": escalation.detail},
            dry_runs=list(detail.get("dry_runs") or []),
            guard=[d["guard"] for d in detail.get("dry_runs") or [] if "guard" in d],
            tokens=tokens,
            cost_usd=cost,
        )
    if status == RunStatus.READY and enqueue:
        enqueue_step(run_id=run.pk, step=step + 1)


def _commit(
    *,
    run: Run,
    expected: int,
    checkpoint: dict[str, Any],
    status: str,
    ticket_fields: dict[str, Any],
    reply: Reply | None,
    escalation: EscalationDraft | None,
    kind: str,
    detail: dict[str, Any],
    tokens: int,
    cost: Decimal,
    started: dt.datetime,
    wake_at: dt.datetime | None = None,
    wait_reason: str = "",
    enqueue: bool = True,
) -> None:
    """Commit one step: the step row, the checkpoint, the ticket, the reply, the escalation.
    With `enqueue=False` the caller takes the next step itself (see `advance`)."""
    finished = status == RunStatus.IDLE
    with transaction.atomic():
        changed = Run.objects.filter(
            pk=run.pk, step=expected, status=RunStatus.RUNNING, lease_owner=WORKER
        ).update(
            step=expected + 1,
            checkpoint=checkpoint,
            status=status,
            lease_until=None,
            lease_owner="",
            wake_at=wake_at,
            wait_reason=wait_reason,
            tokens=F("tokens") + tokens,
            cost_usd=F("cost_usd") + cost,
            turns=F("turns") + (1 if kind.startswith(("agent_turn", "agent_answer")) else 0),
            updated_at=timezone.now(),
        )
        if changed != 1:
            raise StepLost(f"run {run.pk} moved past step {expected}")
        RunStep.objects.create(
            run=run,
            index=expected,
            kind=kind,
            detail=detail,
            tokens=tokens,
            cost_usd=cost,
            worker=WORKER,
            started_at=started,
        )
        if status == RunStatus.IDLE:
            _settle(run, _outcome(escalation))
        if run.shadow_of_id is not None:
            _shadow_commit(
                run=run,
                step=expected,
                checkpoint=checkpoint,
                status=status,
                reply=reply,
                escalation=escalation,
                kind=kind,
                detail=detail,
                tokens=tokens,
                cost=cost,
                enqueue=enqueue,
            )
            return
        ticket = _ticket_of(run)
        if reply is not None:
            sent = memory_services.message_append(
                conversation=ticket.conversation, role=MessageRole.ASSISTANT, content=reply.text
            )
            ticket_fields = {**ticket_fields, "reply": reply.text, "sources": reply.sources}
            transaction.on_commit(
                lambda: live.reply_committed(
                    ticket_id=ticket.pk,
                    message_seq=sent.seq,
                    text=sent.content,
                    sources=reply.sources,
                )
            )
        if escalation is not None:
            services.escalation_open(
                ticket=ticket,
                reason=escalation.reason,
                detail=escalation.detail,
                facts=escalation.facts,
            )
        if ticket_fields:
            Ticket.objects.filter(pk=ticket.pk).update(**ticket_fields, updated_at=timezone.now())
        if status == RunStatus.IDLE and _pending_message(ticket, checkpoint["answered_through"]):
            # A message arrived while this step ran: answer it next.
            Run.objects.filter(pk=run.pk).update(status=RunStatus.READY)
            status = RunStatus.READY
        if status == RunStatus.READY and enqueue:
            enqueue_step(run_id=run.pk, step=expected + 1)
    if escalation is not None:
        telemetry.escalated(escalation.reason)
    if finished:
        telemetry.run_finished(
            run_id=run.pk,
            checkpoint=checkpoint,
            outcome=str(ticket_fields.get("state") or "answered"),
            step=expected,
        )


# --- one step ----------------------------------------------------------------------------------
def _with_staff(ticket: Ticket) -> bool:
    from support.models import Escalation, EscalationState

    return Escalation.objects.filter(
        ticket=ticket, state__in=[EscalationState.OPEN, EscalationState.CLAIMED]
    ).exists()


def _kill_switch_on(ticket: Ticket) -> bool:
    return KillSwitch.objects.filter(
        Q(scope=KillSwitchScope.GLOBAL)
        | Q(scope=KillSwitchScope.CUSTOMER, customer=ticket.customer_id),
        enabled=True,
    ).exists()


def _ctx(run: Run, ticket: Ticket, checkpoint: dict[str, Any]) -> llm.CallContext:
    # A shadow's calls are the house's experiment, not the customer's use: they count against
    # a budget of their own, so a shadow can never use up a customer's daily budget.
    ref = ticket.customer.ref
    release = run.release
    if release is not None and release.state == ReleaseState.ROLLED_BACK:
        # A rolled-back release makes no more calls: the steps still to come of a run it began
        # (and every later message of its ticket) use the current release's pins. The run
        # keeps the record of what it began with. (A rolled-back shadow stops in `advance`.)
        release = release_current()
    return llm.CallContext(
        run_id=f"run-{run.pk}",
        ticket_id=str(ticket.pk),
        customer_ref=ref if run.shadow_of_id is None else f"shadow:{ref}",
        deadline_at=dt.datetime.fromisoformat(checkpoint["deadline_at"]),
        pins=None if release is None else pins_of(release),
    )


def _begin_message(run: Run, ticket: Ticket, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """If the run is between messages and one waits, start answering it (a new segment with its
    own wall-clock deadline). Returns the updated checkpoint, or None when nothing waits."""
    message = _pending_message(
        ticket, int(checkpoint.get("answered_through", 0)), checkpoint.get("shadow_until")
    )
    if message is None:
        return None
    deadline = timezone.now() + dt.timedelta(seconds=settings.SUPPORT_RUN_WALL_SECONDS)
    return {
        **checkpoint,
        "message_seq": message.seq,
        "message": message.content,
        "fresh": True,
        "deadline_at": deadline.isoformat(),
        "phase": "lane" if checkpoint.get("awaiting") else "route",
        "retries": 0,
    }


def _lane_step(env: StepEnv, lane: str, fresh: bool) -> StepOutcome:
    if lane == Lane.FAQ:
        return faq.step(env)
    if lane == Lane.REFUND:
        return refund.step(env)
    return agent.step(env, fresh=fresh)


def _route(env: StepEnv) -> StepOutcome:
    decision = router.decide(text=env.message, complete=env.complete)
    if decision.lane:
        return StepOutcome(
            kind="route",
            state={},
            next="continue",
            lane=decision.lane,
            route=decision.as_dict(),
            detail=decision.as_dict(),
        )
    if env.checkpoint.get("clarified"):
        # One clarifying question only: the agent takes what is still unclear.
        fallback = router.Decision(
            Lane.AGENT,
            decision.confidence,
            decision.tier,
            f"still unclear after one question: {decision.reason}",
        )
        return StepOutcome(
            kind="route",
            state={},
            next="continue",
            lane=fallback.lane,
            route=fallback.as_dict(),
            detail=fallback.as_dict(),
        )
    return StepOutcome(
        kind="route_clarify",
        state={},
        next="clarify",
        reply=Reply(CLARIFY_REPLY),
        route=decision.as_dict(),
        detail=decision.as_dict(),
    )


def _human(draft_reason: str, detail: str, reply: str) -> StepOutcome:
    return StepOutcome(
        kind="escalate",
        state={},
        next="escalate",
        reply=Reply(reply),
        escalation=EscalationDraft(reason=draft_reason, detail=detail),
    )


def _compute(run: Run, ticket: Ticket, checkpoint: dict[str, Any]) -> tuple[StepOutcome, StepEnv]:
    env = StepEnv(
        run=run,
        ticket=ticket,
        customer=ticket.customer,
        checkpoint=checkpoint,
        message=str(checkpoint.get("message", "")),
        ctx=_ctx(run, ticket, checkpoint),
        shadow=run.shadow_of_id is not None,
    )
    fresh = bool(checkpoint.get("fresh"))
    if not env.shadow:  # a shadow run's progress is nobody's to watch
        live.step_started(ticket=ticket, checkpoint=checkpoint)
    if _kill_switch_on(ticket):
        return _human("kill_switch", "a kill switch is on", PAUSED_REPLY), env
    if fresh and not env.shadow and _with_staff(ticket):
        # A person has this conversation: the assistant does not answer over their head.
        return _human("with_staff", "the customer wrote again", WITH_STAFF_REPLY), env
    if fresh and router.wants_human(env.message):
        outcome = _human("customer_asked", "the customer asked for a human", HUMAN_REPLY)
        if not ticket.first_lane:
            # Still routed (no model call: rules or exemplars), so the ticket says what it was.
            decision = router.by_rules(env.message) or router.by_exemplars(
                router.batcher().embed(env.message[:2000])
            )
            if decision is not None:
                outcome.lane, outcome.route = decision.lane, decision.as_dict()
        return outcome, env
    if timezone.now() >= env.ctx.deadline_at:
        if checkpoint.get("lane") == Lane.AGENT:
            return agent.capped(env.state, "wall_clock", "the run ran out of time"), env
        return StepOutcome(
            kind="cap",
            state=env.state,
            next="escalate",
            reply=Reply(agent.CAPPED_TAIL),
            escalation=EscalationDraft(reason="cap_wall_clock", detail="the run ran out of time"),
        ), env
    if checkpoint.get("phase") == "route":
        return _route(env), env
    return _lane_step(env, str(checkpoint.get("lane")), fresh), env


def advance(*, run_id: int, step: int) -> str:
    """Take step `step` of run `run_id` if it is this worker's to take. Returns what happened."""
    if not claim(run_id=run_id, step=step):
        return "not-claimed"
    run = Run.objects.select_related(
        "ticket__customer",
        "ticket__conversation",
        "shadow_of__ticket__customer",
        "shadow_of__ticket__conversation",
        "release",
    ).get(pk=run_id)
    ticket = _ticket_of(run)
    if run.shadow_of_id is None:
        run_release_assign(run=run)  # at its first step: for good
    elif run.release is None or run.release.state == ReleaseState.ROLLED_BACK:
        # Rolled back: its shadows stop where they are.
        Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.IDLE, lease_until=None, lease_owner="", wait_reason="rolled back"
        )
        return "shadow-stopped"
    checkpoint = dict(run.checkpoint)
    started = timezone.now()
    if checkpoint.get("phase") in (None, "idle"):
        begun = _begin_message(run, ticket, checkpoint)
        if begun is None:
            Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                status=RunStatus.IDLE, lease_until=None, lease_owner=""
            )
            # A message that arrived while we looked found the run running, so nobody woke it.
            if _pending_message(
                ticket, int(checkpoint.get("answered_through", 0)), checkpoint.get("shadow_until")
            ) and (
                Run.objects.filter(pk=run.pk, status=RunStatus.IDLE).update(status=RunStatus.READY)
            ):
                enqueue_step(run_id=run.pk, step=step)
            return "idle"
        checkpoint = telemetry.message_begun(begun, step=step)
    with telemetry.step_scope(
        run_id=run.pk, ticket_id=ticket.pk, step=step, checkpoint=checkpoint
    ) as span:
        result = _advance_step(run, ticket, step, checkpoint, started, span)
    if result.startswith("route+"):
        return f"route+{advance(run_id=run_id, step=step + 1)}"
    return result


def _advance_step(
    run: Run, ticket: Ticket, step: int, checkpoint: dict[str, Any], started: dt.datetime, span: Any
) -> str:
    try:
        outcome, env = _compute(run, ticket, checkpoint)
        if outcome.lane:
            telemetry.routed(outcome.lane)
        telemetry.semantic_cache(outcome.detail)
        telemetry.step_done(span, kind=outcome.kind, tokens=env.tokens, cost=env.cost_usd)
        # A route decided without a model (rules, exemplars) took milliseconds: its lane step
        # follows in this task instead of a round trip through the broker (each step is still
        # committed on its own, and a lost worker's step is still taken over by the sweep).
        inline = outcome.kind == "route" and not env.calls and outcome.next == "continue"
        _apply(
            run=run,
            ticket=ticket,
            step=step,
            checkpoint=checkpoint,
            outcome=outcome,
            env=env,
            started=started,
            enqueue=not inline,
        )
        if inline:
            return "route+"  # the caller takes the lane step, outside this step's span
        return outcome.kind
    except llm.Defer as exc:
        _wait(
            run,
            step,
            checkpoint,
            seconds=exc.seconds,
            reason=f"model provider asked to wait: {exc}",
        )
        return "waiting"
    except llm.BudgetExhausted as exc:
        return _budget(run, step, checkpoint, exc, started)
    except llm.ModelUnavailable as exc:
        return _retry_or_give_up(
            run, step, checkpoint, started, f"model unavailable: {exc}", unavailable=True
        )
    except StepLost:
        log.info("support.step_lost", run=run.pk, step=step)
        return "lost"
    except Exception as exc:
        log.exception("support.step_failed", run=run.pk, step=step)
        return _retry_or_give_up(
            run,
            step,
            checkpoint,
            started,
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-4000:]}",
            unavailable=False,
        )


_NEXT_TICKET_STATE = {
    "reply": TicketState.ANSWERED,
    "await_customer": TicketState.AWAITING_CUSTOMER,
    "clarify": TicketState.AWAITING_CUSTOMER,
    "await_approval": TicketState.AWAITING_APPROVAL,
    "escalate": TicketState.ESCALATED,
}


def _apply(
    *,
    run: Run,
    ticket: Ticket,
    step: int,
    checkpoint: dict[str, Any],
    outcome: StepOutcome,
    env: StepEnv,
    started: dt.datetime,
    enqueue: bool = True,
) -> None:
    new = {**checkpoint, "fresh": False, "retries": 0}
    versions = dict(new.get("versions") or {})
    for call in env.calls:
        versions.setdefault("prompts", {})[call["purpose"]] = call["prompt"]
        versions.setdefault("models", {})[call["purpose"]] = call["model"]
    if checkpoint.get("lane") == Lane.AGENT or outcome.lane == Lane.AGENT:
        versions["tools"] = agent.tools.toolset_ref()
    new["versions"] = versions
    ticket_fields: dict[str, Any] = {}
    lane = outcome.lane or checkpoint.get("lane") or ""
    if outcome.lane:  # routed
        new.update(
            phase="lane",
            lane=outcome.lane,
            lane_state=checkpoint.get("lane_state")
            if outcome.lane == checkpoint.get("lane")
            else {},
        )
        ticket_fields.update(
            lane=outcome.lane, route=outcome.route or {}, state=TicketState.IN_LANE
        )
        if not ticket.first_lane:
            ticket_fields["first_lane"] = outcome.lane
    elif outcome.next == "reroute":
        new.update(phase="route", awaiting=None)
    else:
        new["lane_state"] = outcome.state
    if outcome.refund_request_id:
        ticket_fields["refund_request_id"] = outcome.refund_request_id
    reply = outcome.reply
    if reply is not None:
        reply = _guarded(env, lane, reply, outcome.refund_request_id)
    status = RunStatus.READY
    if outcome.next in _NEXT_TICKET_STATE:
        status = RunStatus.IDLE
        ticket_fields["state"] = _NEXT_TICKET_STATE[outcome.next]
        new.update(phase="idle", answered_through=int(new.get("message_seq", 0)))
        new["awaiting"] = (
            lane
            if outcome.next in ("await_customer", "await_approval") and lane == Lane.REFUND
            else None
        )
        if outcome.next == "clarify":
            new["clarified"] = True
        if outcome.next == "escalate":
            new["awaiting"] = None
    elif outcome.next == "continue" and ticket.state == TicketState.RECEIVED:
        ticket_fields["state"] = TicketState.ROUTING
    _commit(
        run=run,
        expected=step,
        checkpoint=new,
        status=status,
        ticket_fields=ticket_fields,
        reply=reply,
        escalation=outcome.escalation,
        kind=outcome.kind,
        detail={
            **outcome.detail,
            **({"calls": env.calls} if env.calls else {}),
            **({"dry_runs": env.dry_runs} if env.dry_runs else {}),
        },
        tokens=env.tokens,
        cost=env.cost_usd,
        started=started,
        enqueue=enqueue,
    )


def _release(
    run: Run,
    step: int,
    checkpoint: dict[str, Any],
    *,
    status: str,
    wake_at: dt.datetime | None,
    reason: str,
) -> None:
    """Give the step back without committing it (it will be taken again)."""
    Run.objects.filter(pk=run.pk, step=step, status=RunStatus.RUNNING, lease_owner=WORKER).update(
        status=status,
        checkpoint=checkpoint,
        lease_until=None,
        lease_owner="",
        wake_at=wake_at,
        wait_reason=reason[:200],
        updated_at=timezone.now(),
    )


def _wait(run: Run, step: int, checkpoint: dict[str, Any], *, seconds: float, reason: str) -> None:
    """A visible wait: the run says when it wakes; beat's sweep wakes it (a short wait is also
    queued with a countdown well under the broker's visibility timeout)."""
    wake = timezone.now() + dt.timedelta(seconds=max(seconds, 1.0))
    _release(run, step, checkpoint, status=RunStatus.WAITING, wake_at=wake, reason=reason)
    if run.ticket_id is not None:  # a shadow run has nobody to tell
        live.run_waiting(ticket_id=run.ticket_id, reason=reason)
    if seconds <= 60:
        from support.tasks import advance_run

        advance_run.apply_async((run.pk, step), countdown=max(seconds, 1.0))


def _budget(
    run: Run, step: int, checkpoint: dict[str, Any], exc: llm.BudgetExhausted, started: dt.datetime
) -> str:
    scope = str(getattr(exc, "scope", "") or exc)
    if "run" in scope:
        _fail_to_humans(
            run,
            step,
            checkpoint,
            started,
            reason="cap_budget",
            detail=f"the run's budget is used up ({scope})",
        )
        return "escalated"
    now = timezone.now()
    if "month" in scope:
        _fail_to_humans(
            run,
            step,
            checkpoint,
            started,
            reason="budget_monthly",
            detail="the monthly model budget is used up",
        )
        return "escalated"
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=5, microsecond=0)
    _wait(
        run,
        step,
        checkpoint,
        seconds=(tomorrow - now).total_seconds(),
        reason=f"model budget paused ({scope}); wakes when it resets",
    )
    return "waiting"


def _fail_to_humans(
    run: Run,
    step: int,
    checkpoint: dict[str, Any],
    started: dt.datetime,
    *,
    reason: str,
    detail: str,
) -> None:
    """Hand the ticket to staff with a holding reply (no model involved)."""
    new = {
        **checkpoint,
        "phase": "idle",
        "awaiting": None,
        "fresh": False,
        "answered_through": int(checkpoint.get("message_seq", 0)),
    }
    _commit(
        run=run,
        expected=step,
        checkpoint=new,
        status=RunStatus.IDLE,
        ticket_fields={"state": TicketState.ESCALATED},
        reply=Reply(UNAVAILABLE_REPLY),
        escalation=EscalationDraft(reason=reason, detail=detail),
        kind="escalate",
        detail={"reason": reason, "detail": detail},
        tokens=0,
        cost=Decimal(0),
        started=started,
    )


def _retry_or_give_up(
    run: Run,
    step: int,
    checkpoint: dict[str, Any],
    started: dt.datetime,
    error: str,
    *,
    unavailable: bool,
) -> str:
    retries = int(checkpoint.get("retries", 0)) + 1
    if retries <= settings.SUPPORT_STEP_RETRIES:
        _wait(
            run,
            step,
            {**checkpoint, "retries": retries},
            seconds=2.0**retries,
            reason=f"retry {retries}: {error.splitlines()[0][:150]}",
        )
        return "retrying"
    if unavailable:
        try:
            _fail_to_humans(
                run, step, checkpoint, started, reason="model_unavailable", detail=error[:500]
            )
        except StepLost:
            return "lost"
        return "escalated"
    dead_letter(run=run, step=step, checkpoint=checkpoint, error=error)
    return "dead-letter"


def dead_letter(*, run: Run, step: int, checkpoint: dict[str, Any], error: str) -> None:
    """A run that failed for good: record it with its last checkpoint; the customer is told.
    A shadow run just stops, its error on its record (nobody retries an experiment)."""
    if run.shadow_of_id is not None:
        with transaction.atomic():
            if Run.objects.filter(pk=run.pk, step=step, status=RunStatus.RUNNING).update(
                status=RunStatus.FAILED, lease_until=None, lease_owner="", wait_reason=error[:200]
            ):
                _settle(run, RunOutcome.ERROR)
        return
    ticket = _ticket_of(run)
    with transaction.atomic():
        changed = Run.objects.filter(pk=run.pk, step=step, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED, lease_until=None, lease_owner="", updated_at=timezone.now()
        )
        if changed != 1:
            return
        DeadLetter.objects.create(run=run, error=error, step=step, checkpoint=checkpoint)
        _settle(run, RunOutcome.ERROR)
        Ticket.objects.filter(pk=ticket.pk).update(
            state=TicketState.FAILED, updated_at=timezone.now()
        )
        sent = memory_services.message_append(
            conversation=ticket.conversation,
            role=MessageRole.ASSISTANT,
            content=UNAVAILABLE_REPLY,
        )
        transaction.on_commit(
            lambda: live.reply_committed(
                ticket_id=ticket.pk, message_seq=sent.seq, text=sent.content, sources=[]
            )
        )
    log.error("support.dead_letter", run=run.pk, step=step, error=error.splitlines()[0][:200])
    telemetry.run_finished(run_id=run.pk, checkpoint=checkpoint, outcome="failed", step=step)
