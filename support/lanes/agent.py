"""The agent lane: a tool-using loop on the large tier, one bounded step per task.

A step is either one model turn or one batch of the tool calls that turn asked for (independent
read-only calls run in parallel). Caps on turns, tokens, cost and wall-clock end the loop in the
best partial answer plus an escalation, never in silence or a loop. A tool error goes back to
the model as an error result; a result that breaks its schema, or too many tool calls (the
anomaly limit), ends the run in an escalation.
"""

from __future__ import annotations

import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection

from billing import selectors as billing_selectors
from memory import selectors as memory_selectors
from memory.context import build_context
from support import tools
from support.lanes import faq, refund
from support.steps import EscalationDraft, Reply, StepEnv, StepOutcome

PROMPT = "agent_system"
MAX_TOKENS = 1024
CAPPED_TAIL = (
    "I haven't been able to finish looking into this, so I've passed it to a human on our support "
    "team with what I found; they will reply here (staff work Monday to Friday, 08:00-18:00 CET)."
)


def _article_titles() -> dict[str, str]:
    return {a.slug: a.title for a in memory_selectors.articles_list()}


def _start_state(env: StepEnv) -> dict[str, Any]:
    # Passages and memories are the agent's tools to ask for (search_help_center,
    # recall_customer_memory), not text resent with every turn: query="" leaves them out.
    # A shadow answers its message as the live run did, from the conversation up to it: not
    # the live reply or the customer's later messages (nor summarising them into the row the
    # live run reads).
    context = build_context(
        conversation=env.ticket.conversation,
        ctx=env.ctx,
        query="",
        through_seq=int(env.checkpoint.get("message_seq", 0)) if env.shadow else None,
    )
    messages = context.messages() or [{"role": "user", "content": env.message}]
    while env.shadow and len(messages) > 1 and messages[-1]["role"] != "user":
        # A shadow sees the conversation as it was when the message came: not the live run's
        # reply to it, which may be written by now.
        messages.pop()
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": env.message})
    return {
        "messages": messages,
        "system_extra": context.system_extra(),
        "turns": 0,
        "tool_calls": 0,
        "input_errors": 0,
        "pending": [],
        "last_text": "",
        "refund_request": None,
        "escalate": None,
        "tools": tools.toolset_ref(),
    }


def capped(state: dict[str, Any], cap: str, detail: str) -> StepOutcome:
    partial = str(state.get("last_text") or "").strip()
    text = f"{partial}\n\n{CAPPED_TAIL}" if partial else CAPPED_TAIL
    return StepOutcome(
        kind="agent_cap",
        state=state,
        next="escalate",
        reply=Reply(text),
        escalation=EscalationDraft(
            reason=f"cap_{cap}",
            detail=detail,
            facts={"steps": _transcript(state)},
        ),
        refund_request_id=state.get("refund_request"),
        detail={"cap": cap},
    )


def _transcript(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The agent's steps for staff: its tool calls and results, verbatim, no summary."""
    steps: list[dict[str, Any]] = []
    for message in state.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            steps.append({"role": message["role"], "text": content[:2000]})
            continue
        for block in content or []:
            if block.get("type") == "text":
                steps.append({"role": message["role"], "text": block["text"][:2000]})
            elif block.get("type") == "tool_use":
                steps.append({"tool_call": block["name"], "input": block.get("input")})
            elif block.get("type") == "tool_result":
                steps.append(
                    {
                        "tool_result": str(block.get("content"))[:2000],
                        "is_error": block.get("is_error", False),
                    }
                )
    return steps


def _model_turn(env: StepEnv, state: dict[str, Any]) -> StepOutcome:
    run = env.run
    if state["turns"] >= settings.SUPPORT_AGENT_MAX_TURNS:
        return capped(state, "turns", f"the agent used its {state['turns']} turns")
    if Decimal(run.cost_usd) + env.cost_usd >= settings.SUPPORT_AGENT_MAX_COST_USD:
        return capped(state, "cost", f"the run cost ${run.cost_usd} of its cap")
    if run.tokens + env.tokens >= settings.SUPPORT_AGENT_MAX_TOKENS:
        return capped(state, "tokens", f"the run used {run.tokens} tokens of its cap")
    completion = env.complete(
        tier="large",
        purpose="agent",
        prompt=PROMPT,
        messages=state["messages"],
        max_tokens=MAX_TOKENS,
        tools=tools.DEFINITIONS,
        system_extra=state.get("system_extra") or None,
        fallback="none",
    )
    state = {**state, "turns": state["turns"] + 1, "model": completion.model}
    if completion.text.strip():
        state["last_text"] = completion.text.strip()
    if completion.tool_calls:
        state["messages"] = [
            *state["messages"],
            {"role": "assistant", "content": completion.content},
        ]
        state["pending"] = [
            {"id": c.id, "name": c.name, "input": c.input, "error": c.error}
            for c in completion.tool_calls
        ]
        return StepOutcome(
            kind="agent_turn",
            state=state,
            next="continue",
            detail={"tools": [c.name for c in completion.tool_calls], "model": completion.model},
        )
    escalate = state.get("escalate")
    text, sources = faq.cite(completion.text, _article_titles())
    if state.get("refund_request"):
        # Where the request stands comes from its row, whatever the model wrote about it.
        request = billing_selectors.refund_request_get_for_customer(
            customer=env.customer, refund_request_id=int(state["refund_request"])
        )
        if request is not None:
            text = f"{text}\n\n{refund.status_text(request)}".strip()
    reply = Reply(text or CAPPED_TAIL, sources)
    outcome_next = (
        "escalate"
        if escalate
        else ("await_approval" if state.get("awaiting_approval") else "reply")
    )
    return StepOutcome(
        kind="agent_answer",
        state={
            **state,
            "messages": [*state["messages"], {"role": "assistant", "content": completion.content}],
        },
        next=outcome_next,
        reply=reply,
        escalation=EscalationDraft(
            reason="agent",
            detail=str(escalate.get("uncertainty") or escalate.get("reason") or ""),
            facts={"reason": escalate.get("reason"), "steps": _transcript(state)},
        )
        if escalate
        else None,
        refund_request_id=state.get("refund_request"),
        detail={"model": completion.model},
    )


def _read(scope: tools.ToolScope, call: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A read-only tool's (result, is_error); a ToolResultInvalid propagates (escalation)."""
    try:
        return tools.run_tool(scope, call["name"], call["input"]), False
    except tools.ToolError as exc:
        return {"error": str(exc)}, True


def _read_in_thread(scope: tools.ToolScope, call: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    try:
        return _read(scope, call)
    finally:
        connection.close()  # this thread's own connection; the pool takes it back


def _tool_batch(env: StepEnv, state: dict[str, Any]) -> StepOutcome:
    calls: list[dict[str, Any]] = state["pending"]
    used = state["tool_calls"] + len(calls)
    if used > settings.SUPPORT_TOOL_CALL_LIMIT:
        return capped(
            {**state, "pending": []},
            "tool_calls",
            f"{used} tool calls is above the anomaly limit of {settings.SUPPORT_TOOL_CALL_LIMIT}",
        )
    scope = tools.ToolScope(
        customer=env.customer, ticket_id=env.ticket.pk, run_id=env.run.pk, write=env.write
    )
    results: dict[str, tuple[dict[str, Any], bool]] = {}
    invalid = [c for c in calls if c.get("error")]
    for call in invalid:
        results[call["id"]] = ({"error": f"invalid input: {call['error']}"}, True)
    reads = [c for c in calls if not c.get("error") and c["name"] in tools.READ_ONLY]
    try:
        if len(reads) > 1:  # independent lookups of one turn run side by side
            with ThreadPoolExecutor(max_workers=min(len(reads), 4)) as pool:
                # Each lookup runs in a copy of this step's context: its logs and spans keep
                # the step's trace id, run and lane.
                futures = [
                    pool.submit(contextvars.copy_context().run, _read_in_thread, scope, c)
                    for c in reads
                ]
                outcomes = [f.result() for f in futures]
        else:
            outcomes = [_read(scope, c) for c in reads]
        results.update({call["id"]: o for call, o in zip(reads, outcomes, strict=True)})
        state = dict(state)
        for call in calls:
            if call["id"] in results:
                continue
            try:
                result = tools.run_tool(scope, call["name"], call["input"])
                results[call["id"]] = (result, False)
            except tools.ToolError as exc:
                results[call["id"]] = ({"error": str(exc)}, True)
                continue
            if call["name"] == "propose_refund":
                state["refund_request"] = result["refund_request"]
                state["awaiting_approval"] = bool(result["requires_approval"])
            elif call["name"] == "escalate_to_human":
                state["escalate"] = call["input"]
    except tools.ToolResultInvalid as exc:
        return StepOutcome(
            kind="agent_tools",
            state={**state, "pending": []},
            next="escalate",
            reply=Reply(CAPPED_TAIL),
            escalation=EscalationDraft(
                reason="tool_schema", detail=str(exc), facts={"steps": _transcript(state)}
            ),
            refund_request_id=state.get("refund_request"),
            detail={"error": str(exc)},
        )
    blocks = [
        {
            "type": "tool_result",
            "tool_use_id": call["id"],
            "content": json.dumps(results[call["id"]][0], default=str),
            **({"is_error": True} if results[call["id"]][1] else {}),
        }
        for call in calls
    ]
    errors = sum(1 for call in calls if results[call["id"]][1])
    state = {
        **state,
        "messages": [*state["messages"], {"role": "user", "content": blocks}],
        "pending": [],
        "tool_calls": used,
        "input_errors": state.get("input_errors", 0) + len(invalid),
    }
    if state["input_errors"] > 2:
        return capped(
            state, "tool_input", "the model kept sending tool input that breaks the schema"
        )
    return StepOutcome(
        kind="agent_tools",
        state=state,
        next="continue",
        refund_request_id=state.get("refund_request"),
        detail={
            "calls": [{"name": c["name"], "input": c["input"]} for c in calls],
            "errors": errors,
        },
    )


def step(env: StepEnv, *, fresh: bool) -> StepOutcome:
    state = env.state
    if not state.get("messages"):
        state = _start_state(env)
    elif fresh:
        # A follow-up message continues the same run and conversation.
        state = {
            **state,
            "messages": [*state["messages"], {"role": "user", "content": env.message}],
            "escalate": None,
        }
    if state.get("pending"):
        return _tool_batch(env, state)
    return _model_turn(env, state)
