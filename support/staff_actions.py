"""Staff actions with their audit entries: each is one service call and one `AuditEntry`,
committed together (the action and the record of who did it commit or roll back as one).

The staff pages call these with `via="page:<path>"`; the REST API can call the same ones with
`via="api_key:<prefix>"`. Permission checks stay where the action lives: the refund decision's
in `billing.services` (staff with `billing.decide_refundrequest`), the pages' staff-only check
in the views.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.contrib.auth.models import User
from django.db import transaction

from billing import services as billing_services
from billing.models import Customer, RefundRequest
from memory import services as memory_services
from memory.models import Article, Message
from support import apikeys, services
from support.audit import audit_record
from support.models import ApiKey, DeadLetter, Escalation, KillSwitch

MAX_NOTE_CHARS = 2000


class StaffInputError(ValueError):
    """The staff member's input cannot be used as it is (an empty reason, a note too long)."""


def _note(note: str, *, required: bool) -> str:
    cleaned = note.replace("\x00", "").strip()
    if required and not cleaned:
        raise StaffInputError("give a reason")
    if len(cleaned) > MAX_NOTE_CHARS:
        raise StaffInputError(f"the reason is longer than {MAX_NOTE_CHARS} characters")
    return cleaned


# --- refund requests ------------------------------------------------------------------------------
def _refund_decision(
    decide: Callable[..., RefundRequest],
    verb: str,
    *,
    refund_request: RefundRequest,
    actor: User,
    note: str,
    via: str,
    reason_required: bool,
) -> RefundRequest:
    cleaned = _note(note, required=reason_required)
    decided = decide(refund_request=refund_request, actor=actor, note=cleaned)
    audit_record(
        actor=actor,
        action=f"refund_request.{verb}",
        target=f"refund_request:{decided.pk}",
        via=via,
        detail={"amount": str(decided.amount), "currency": decided.currency, "note": cleaned},
    )
    return decided


@transaction.atomic
def refund_request_approve(
    *, refund_request: RefundRequest, actor: User, note: str, via: str
) -> RefundRequest:
    """Approve (billing checks the decide permission and that the request is still proposed
    and unexpired: a second approval raises RefundRequestStateError and records nothing)."""
    return _refund_decision(
        billing_services.refund_request_approve,
        "approve",
        refund_request=refund_request,
        actor=actor,
        note=note,
        via=via,
        reason_required=False,
    )


@transaction.atomic
def refund_request_reject(
    *, refund_request: RefundRequest, actor: User, note: str, via: str
) -> RefundRequest:
    """Reject with a reason (required: the customer is told it)."""
    return _refund_decision(
        billing_services.refund_request_reject,
        "reject",
        refund_request=refund_request,
        actor=actor,
        note=note,
        via=via,
        reason_required=True,
    )


# --- escalations ----------------------------------------------------------------------------------
@transaction.atomic
def escalation_claim(*, escalation: Escalation, actor: User, via: str) -> bool:
    claimed = services.escalation_claim(escalation=escalation, actor=actor)
    if claimed:
        audit_record(
            actor=actor, action="escalation.claim", target=f"escalation:{escalation.pk}", via=via
        )
    return claimed


@transaction.atomic
def escalation_reply(*, escalation: Escalation, actor: User, text: str, via: str) -> Message:
    message = services.escalation_reply(escalation=escalation, actor=actor, text=text)
    audit_record(
        actor=actor,
        action="escalation.reply",
        target=f"escalation:{escalation.pk}",
        via=via,
        detail={"ticket": escalation.ticket_id, "message_seq": message.seq},
    )
    return message


@transaction.atomic
def escalation_resolve(*, escalation: Escalation, actor: User, via: str) -> bool:
    resolved = services.escalation_resolve(escalation=escalation, settle_ticket=True)
    if resolved:
        audit_record(
            actor=actor,
            action="escalation.resolve",
            target=f"escalation:{escalation.pk}",
            via=via,
            detail={"ticket": escalation.ticket_id},
        )
    return resolved


# --- dead letters ---------------------------------------------------------------------------------
@transaction.atomic
def dead_letter_retry(*, dead_letter: DeadLetter, actor: User, via: str) -> bool:
    retried = services.dead_letter_retry(dead_letter=dead_letter)
    if retried:
        audit_record(
            actor=actor,
            action="dead_letter.retry",
            target=f"dead_letter:{dead_letter.pk}",
            via=via,
            detail={"run": dead_letter.run_id, "step": dead_letter.step},
        )
    return retried


@transaction.atomic
def dead_letter_discard(*, dead_letter: DeadLetter, actor: User, via: str) -> bool:
    discarded = services.dead_letter_discard(dead_letter=dead_letter)
    if discarded:
        audit_record(
            actor=actor,
            action="dead_letter.discard",
            target=f"dead_letter:{dead_letter.pk}",
            via=via,
            detail={"run": dead_letter.run_id},
        )
    return discarded


# --- kill switches --------------------------------------------------------------------------------
@transaction.atomic
def kill_switch_set(
    *, enabled: bool, actor: User, reason: str, via: str, customer: Customer | None = None
) -> KillSwitch:
    """Turn the global switch (customer None) or one customer's on or off. Turning one on needs
    a reason (it is what colleagues see); turning it off may leave it empty."""
    cleaned = _note(reason, required=enabled)
    switch = services.kill_switch_set(
        enabled=enabled, actor=f"staff:{actor.get_username()}", customer=customer, reason=cleaned
    )
    audit_record(
        actor=actor,
        action="kill_switch.on" if enabled else "kill_switch.off",
        target=f"kill_switch:{customer.ref}" if customer else "kill_switch:global",
        via=via,
        detail={"reason": cleaned},
    )
    return switch


# --- help-center articles -------------------------------------------------------------------------
@transaction.atomic
def article_create(
    *, actor: User, via: str, slug: str, title: str, section: str, body: str, keywords: str = ""
) -> Article:
    """Create and index an article (the slug must be new: IntegrityError)."""
    created = memory_services.article_create(
        slug=slug, title=title, section=section, body=body, keywords=keywords
    )
    audit_record(
        actor=actor,
        action="article.create",
        target=f"article:{created.slug}",
        via=via,
        detail={"content_hash": created.content_hash},
    )
    return created


@transaction.atomic
def article_delete(*, article: Article, actor: User, via: str) -> None:
    memory_services.article_delete(article=article)
    audit_record(actor=actor, action="article.delete", target=f"article:{article.slug}", via=via)


@transaction.atomic
def article_edit(
    *, article: Article, actor: User, via: str, title: str, section: str, body: str, keywords: str
) -> Article:
    """Save an article (re-indexed and the knowledge-base version bumped when content changed)."""
    fields = {"title": title, "section": section, "body": body, "keywords": keywords}
    cleaned = {name: value.replace("\x00", "").strip() for name, value in fields.items()}
    missing = [name for name in ("title", "section", "body") if not cleaned[name]]
    if missing:
        raise StaffInputError(f"{', '.join(missing)} cannot be empty")
    if len(cleaned["title"]) > 200 or len(cleaned["section"]) > 100:
        raise StaffInputError("the title is at most 200 characters and the section 100")
    before = article.content_hash
    saved = memory_services.article_update(article=article, **cleaned)
    audit_record(
        actor=actor,
        action="article.edit",
        target=f"article:{saved.slug}",
        via=via,
        detail={"changed": saved.content_hash != before, "content_hash": saved.content_hash},
    )
    return saved


@transaction.atomic
def article_reindex(*, article: Article, actor: User, via: str) -> int:
    written = memory_services.article_reindex(article=article, force=True)
    audit_record(
        actor=actor,
        action="article.reindex",
        target=f"article:{article.slug}",
        via=via,
        detail={"chunks_written": written},
    )
    return written


# --- REST API keys --------------------------------------------------------------------------------
@transaction.atomic
def api_key_create(
    *,
    actor: User,
    via: str,
    name: str,
    scopes: list[str],
    owner: User,
    customer: Customer | None = None,
    expires_at: dt.datetime | None = None,
) -> apikeys.IssuedKey:
    """Issue a key (the plaintext is in the result only; the entry names the prefix)."""
    issued = apikeys.api_key_create(
        name=name, scopes=scopes, owner=owner, customer=customer, expires_at=expires_at
    )
    audit_record(
        actor=actor,
        action="api_key.create",
        target=f"api_key:{issued.api_key.prefix}",
        via=via,
        detail={
            "name": issued.api_key.name,
            "scopes": issued.api_key.scopes,
            "owner": owner.get_username(),
            "customer": customer.ref if customer else None,
        },
    )
    return issued


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, actor: User, via: str) -> apikeys.IssuedKey:
    """Rotate (apikeys.ApiKeyError when revoked or rotated already; nothing recorded then)."""
    issued = apikeys.api_key_rotate(api_key=api_key)
    audit_record(
        actor=actor,
        action="api_key.rotate",
        target=f"api_key:{api_key.prefix}",
        via=via,
        detail={
            "new": issued.api_key.prefix,
            "old_valid_until": api_key.expires_at.isoformat() if api_key.expires_at else None,
        },
    )
    return issued


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: User, via: str) -> bool:
    revoked = apikeys.api_key_revoke(api_key=api_key)
    if revoked:
        audit_record(
            actor=actor, action="api_key.revoke", target=f"api_key:{api_key.prefix}", via=via
        )
    return revoked
