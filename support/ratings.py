"""Answer ratings from the customer chat: helpful / not helpful, with an optional comment.

A rating belongs to one assistant message of a ticket (`message_seq`); rating it again replaces
the verdict. It records the ticket's lane and the release that answered (support.live
.release_label), so ratings can be compared by lane and release; "helpful" counts as a
confirmed resolution.
"""

from __future__ import annotations

from django.db import transaction

from memory.models import Message, MessageRole
from support.live import release_label
from support.models import AnswerRating, Run, Ticket

MAX_COMMENT_CHARS = 2000


class RatingRefused(ValueError):
    """Not an answer of this ticket, or a comment too long."""


@transaction.atomic
def answer_rate(
    *, ticket: Ticket, message_seq: int, helpful: bool, comment: str = ""
) -> AnswerRating:
    """Record the customer's verdict on answer `message_seq` of `ticket` (which the caller has
    scoped to the signed-in customer)."""
    comment = comment.replace("\x00", "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise RatingRefused(f"the comment is longer than {MAX_COMMENT_CHARS} characters")
    is_answer = Message.objects.filter(
        conversation_id=ticket.conversation_id, seq=message_seq, role=MessageRole.ASSISTANT
    ).exists()
    if not is_answer:
        raise RatingRefused("there is no answer with that number in this conversation")
    checkpoint = Run.objects.filter(ticket=ticket).values_list("checkpoint", flat=True).first()
    rating, _ = AnswerRating.objects.update_or_create(
        ticket=ticket,
        message_seq=message_seq,
        defaults={
            "helpful": helpful,
            "comment": comment,
            "lane": ticket.lane or "",
            "release": release_label(checkpoint or {}),
        },
    )
    return rating
