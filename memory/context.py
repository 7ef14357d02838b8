"""Conversation context assembly: what a model sees of a conversation, within a token budget.

In order of priority:
1. the newest turns verbatim (at least CONTEXT_RECENT_TURNS, more while they fit in 60% of
   the budget), from the Redis hot copy (rebuilt from Postgres when missing);
2. older turns as a summary written by the small model through the gateway
   (`llm.complete(tier="small", purpose="summarise", prompt="summarise_conversation")`, counted
   against the caller's run), kept on the conversation and extended incrementally as the
   conversation grows;
3. help-center passages relevant to the latest customer message;
4. that customer's memories relevant to it (never another customer's: the selector takes the
   conversation's customer).

Tokens are estimated at 4 characters per token plus 4 per message (no tokenizer ships offline;
the estimate errs high for English prose, which keeps the budget safe).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from django.conf import settings

from ledgerly.llm.context import CallContext
from memory import hot, selectors, services
from memory.models import Conversation, Message, MessageRole

log = logging.getLogger(__name__)

VERBATIM_SHARE = 0.6
TRUNCATED = "[start of a long message omitted] "
SUMMARY_SHARE = 0.15


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) + 4


@dataclass(frozen=True)
class ConversationContext:
    conversation_id: int
    customer_id: int
    turns: list[hot.Turn]  # verbatim, oldest first
    summary: str  # of the turns before `turns` ("" when there are none)
    summary_source: str  # none | stored | model | fallback
    passages: list[selectors.RetrievedPassage] = field(default_factory=list)
    memories: list[selectors.RecalledMemory] = field(default_factory=list)
    token_budget: int = 0
    tokens_used: int = 0

    def messages(self) -> list[dict[str, Any]]:
        """The verbatim turns in the Messages API format (roles alternate, user first)."""
        out: list[dict[str, Any]] = []
        for turn in self.turns:
            role = "user" if turn.role == MessageRole.CUSTOMER else "assistant"
            if out and out[-1]["role"] == role:
                out[-1]["content"] += "\n\n" + turn.content
            else:
                out.append({"role": role, "content": turn.content})
        if out and out[0]["role"] == "assistant":
            out.insert(0, {"role": "user", "content": "(Earlier conversation: see the summary.)"})
        return out

    def system_extra(self) -> str:
        """Summary, memories and passages, for the gateway's `system_extra`."""
        parts = []
        if self.summary:
            parts.append(f"<conversation_summary>{escape(self.summary)}</conversation_summary>")
        if self.memories:
            lines = "\n".join(
                f"- {escape(m.text)} (noted {m.created_at:%Y-%m-%d}"
                + (f", conversation {m.conversation_id})" if m.conversation_id else ")")
                for m in self.memories
            )
            parts.append(f"<customer_memories>\n{lines}\n</customer_memories>")
        if self.passages:
            parts.append(selectors.passages_as_documents(self.passages))
        return "\n".join(parts)


def _transcript(messages: list[Message] | list[hot.Turn]) -> str:
    names = {"customer": "Customer", "assistant": "Assistant", "staff": "Staff"}
    return "\n".join(f"{names.get(m.role, m.role)}: {m.content}" for m in messages)


def _summarise(
    conversation: Conversation, through_seq: int, max_tokens: int, ctx: CallContext
) -> tuple[str, str]:
    """A summary of messages 1..through_seq: the stored one if it covers them, else the small
    model's, extending the stored summary with the messages after it. Returns (text, source)."""
    if through_seq <= 0:
        return "", "none"
    if conversation.summary_through_seq >= through_seq:
        return conversation.summary, "stored"
    new = list(
        Message.objects.filter(
            conversation=conversation,
            seq__gt=conversation.summary_through_seq,
            seq__lte=through_seq,
        ).order_by("seq")
    )
    text = _transcript(new)
    if conversation.summary:
        text = f"Summary of the conversation so far: {conversation.summary}\n\nThen:\n{text}"
    from ledgerly import llm

    try:
        completion = llm.complete(
            ctx=ctx,
            tier="small",
            purpose="summarise",
            prompt="summarise_conversation",
            messages=[{"role": "user", "content": text}],
            max_tokens=max_tokens,
            # Never the static holding answer: it would be stored as the summary.
            fallback="none",
        )
    except (llm.Defer, llm.BudgetExhausted, llm.ModelUnavailable, llm.ModelCallFailed) as exc:
        log.warning("summary failed for conversation %s: %r", conversation.pk, exc)
        completion = None
    if completion is None or completion.static or not completion.text.strip():
        # Keep what we have rather than fail the turn; the next assembly tries again.
        omitted = through_seq - conversation.summary_through_seq
        fallback = f"{conversation.summary} [{omitted} earlier messages not summarised]".strip()
        return fallback, "fallback"
    summary = completion.text.strip()
    services.conversation_summary_save(
        conversation=conversation, summary=summary, through_seq=through_seq
    )
    return summary, "model"


def build_context(
    *,
    conversation: Conversation,
    ctx: CallContext,
    query: str | None = None,
    token_budget: int | None = None,
    through_seq: int | None = None,
) -> ConversationContext:
    """Assemble `conversation`'s context within `token_budget` (CONTEXT_TOKEN_BUDGET).

    `through_seq` leaves out the messages after it (a shadow run answering an earlier message
    of a conversation that has moved on; support/releases.py).

    `ctx` is the run the assembly is part of: the summary call counts against its budgets and
    ends by its deadline. `query` (default: the latest customer message) selects passages and
    memories. Calls the small model only when turns have fallen out of the verbatim window since
    the last summary; hold no transaction around this call (the gateway refuses to call inside
    one).
    """
    budget = token_budget or settings.CONTEXT_TOKEN_BUDGET
    conversation.refresh_from_db()
    recent = hot.recent_turns(conversation=conversation)
    if through_seq is not None:
        recent = [turn for turn in recent if turn.seq <= through_seq]
    # 1. Newest turns verbatim: the minimum always, more while within the verbatim share.
    chosen: list[hot.Turn] = []
    used = 0
    for i, turn in enumerate(reversed(recent)):
        cost = estimate_tokens(turn.content)
        if i == 0 and cost > budget * VERBATIM_SHARE:
            # A single huge message: keep its end (where the question usually is) within budget.
            keep = max(int(budget * VERBATIM_SHARE) - 8, 1) * 4 - len(TRUNCATED)
            turn = hot.Turn(seq=turn.seq, role=turn.role, content=TRUNCATED + turn.content[-keep:])
            cost = estimate_tokens(turn.content)
        # Room is always left for the summary of what falls out of the window.
        must = i < settings.CONTEXT_RECENT_TURNS and used + cost <= budget * (1 - SUMMARY_SHARE)
        if i == 0 or must or used + cost <= budget * VERBATIM_SHARE:
            chosen.append(turn)
            used += cost
        else:
            break
    chosen.reverse()
    first_verbatim = chosen[0].seq if chosen else conversation.last_seq + 1
    # 2. Everything older, summarised.
    summary_cap = max(64, min(512, int(budget * SUMMARY_SHARE)))
    summary, source = _summarise(conversation, first_verbatim - 1, summary_cap, ctx)
    if summary and used + estimate_tokens(summary) > budget:
        # The model overran its share (token estimates are rough): keep the summary's start.
        summary = summary[: max(budget - used - 4, 0) * 4].rstrip()
    if summary:
        used += estimate_tokens(summary)
    # 3 and 4. Passages, then this customer's memories, while they fit.
    if query is None:
        query = next((t.content for t in reversed(chosen) if t.role == MessageRole.CUSTOMER), "")
    passages: list[selectors.RetrievedPassage] = []
    memories: list[selectors.RecalledMemory] = []
    if query and settings.CONTEXT_PASSAGES:
        for passage in selectors.passages_search(query=query, k=settings.CONTEXT_PASSAGES):
            cost = estimate_tokens(passage.text) + 20
            if used + cost > budget:
                break
            passages.append(passage)
            used += cost
    if query and settings.CONTEXT_MEMORIES:
        for memory in selectors.customer_memories_recall(
            customer=conversation.customer, query=query, k=settings.CONTEXT_MEMORIES
        ):
            cost = estimate_tokens(memory.text) + 8
            if used + cost > budget:
                break
            memories.append(memory)
            used += cost
    return ConversationContext(
        conversation_id=conversation.pk,
        customer_id=conversation.customer_id,
        turns=chosen,
        summary=summary,
        summary_source=source,
        passages=passages,
        memories=memories,
        token_budget=budget,
        tokens_used=used,
    )
