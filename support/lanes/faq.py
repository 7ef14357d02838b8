"""The FAQ lane: semantic cache → retrieval → one small-model call over the passages.

The answer comes only from help-center passages and cites their articles. When the passages do
not answer the question (the model cites none of them), the reply says so and offers a person:
it never guesses.
"""

from __future__ import annotations

import re

from django.conf import settings

from memory import selectors as memory_selectors
from memory import services as memory_services
from support import events, guard
from support.steps import Reply, StepEnv, StepOutcome

PROMPT = "faq_answer"
PASSAGES = 4
_CITATION = re.compile(r"\s*\[([a-z0-9][a-z0-9-]*)\]")

NOT_FOUND = (
    "I couldn't find the answer to that in our help center, and I don't want to guess. If you "
    "like, I can pass your question to a human on our support team: just say so. Staff work "
    "Monday to Friday, 08:00-18:00 CET."
)


def cite(text: str, titles: dict[str, str]) -> tuple[str, list[dict[str, str]]]:
    """The text without its [slug] markers, and the articles it cited (known slugs only)."""
    cited = [slug for slug in dict.fromkeys(_CITATION.findall(text)) if slug in titles]
    clean = _CITATION.sub("", text).strip()
    return clean, [{"slug": slug, "title": titles[slug]} for slug in cited]


def answer_question(env: StepEnv, question: str) -> tuple[Reply, dict[str, object]]:
    """A grounded answer to `question` (one model call at most) and what was done for it."""
    # The cache is keyed by what writes the answer: the run's release's prompt version and model.
    prompt_ref = env.prompt(PROMPT).ref
    model = env.model_for("small")
    if settings.SUPPORT_SEMANTIC_CACHE:
        cached = env.write(
            memory_services.semantic_cache_lookup,  # logs the lookup: a dry run in a shadow
            question=question,
            prompt_version=prompt_ref,
            answer_model=model,
            customer=env.customer,
        )
        if cached is not None:
            return Reply(cached.answer, list(cached.sources)), {
                "cache": "hit",
                "similarity": round(cached.similarity, 4),
            }
    kb_version = memory_selectors.kb_version_get()  # read before retrieval: see cache_store
    passages = memory_selectors.passages_search(query=question, k=PASSAGES)
    documents = memory_selectors.passages_as_documents(passages)
    # The answer streams to the customer's chat as the model writes it, as a *draft*: the page
    # shows the deltas marked as unchecked and replaces them with the `reply` event, which
    # carries the text the runner committed after the guard (support/guard.py) checked it,
    # redrafted it or replaced it; a status event or a fallback's draft_reset clears a draft.
    # Why not guard sentence by sentence: the guard judges the whole reply against the rows
    # (an amount, a refund claim, a date) and the runner may redraft or swap it wholesale, so a
    # sentence that passed alone could still be withdrawn; and only this lane streams, whose
    # drafts come from help-center passages with no customer figures in them. So nothing a
    # guard blocks stays on screen: the final reply always replaces the draft.
    relay = None if getattr(env, "shadow", False) else events.DeltaRelay(ticket_id=env.ticket.pk)
    completion = env.complete(
        tier="small",
        purpose="faq_answer",
        prompt=PROMPT,
        messages=[{"role": "user", "content": f"{documents}\n\nCustomer question:\n{question}"}],
        max_tokens=500,
        fallback="none",
        on_text=relay,
        on_restart=relay.reset if relay else None,
    )
    if relay is not None:
        relay.flush()
    titles = {p.slug: p.title for p in passages}
    text, sources = cite(completion.text, titles)
    cited = [source["slug"] for source in sources]
    detail: dict[str, object] = {
        "cache": "miss" if settings.SUPPORT_SEMANTIC_CACHE else "off",
        "passages": [p.slug for p in passages],
        "cited": cited,
        "kb_version": kb_version,
    }
    if not cited:
        # Nothing from the help center backs the draft: say so rather than pass on a guess.
        return Reply(NOT_FOUND), {**detail, "found": False}
    if (
        settings.SUPPORT_SEMANTIC_CACHE
        and not env.shadow  # a shadow's answers are never served to anyone
        and guard.check(text=text, customer=env.customer, refund_request=None).ok
    ):
        # Only a draft the guard lets through is kept for other customers (the runner guards
        # this reply itself; a draft it would replace must not be served from the cache).
        try:
            memory_services.semantic_cache_store(
                question=question,
                answer=text,
                sources=sources,
                prompt_version=prompt_ref,
                kb_version=kb_version,
                answer_model=completion.model,
            )
        except memory_services.CustomerSpecificAnswer:
            detail["cache_store"] = "refused: customer-specific"
    return Reply(text, sources), {**detail, "found": True}


def step(env: StepEnv) -> StepOutcome:
    reply, detail = answer_question(env, env.message)
    return StepOutcome(kind="faq_answer", state={}, next="reply", reply=reply, detail=detail)
