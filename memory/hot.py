"""The hot copy of each conversation's recent turns in Redis (rebuildable; Postgres is the truth).

Key `<REDIS_KEY_PREFIX>:memory:customer:<customer id>:conv:<id>:recent`: a list of JSON turns
(seq, role, content), oldest first, at most CONVERSATION_HOT_TURNS long, expiring after
CONVERSATION_HOT_TTL_SECONDS idle.

Appends use RPUSHX (push only onto an existing list), so a missing or expired key is never
replaced by a partial list; readers check that the list ends at the conversation's last
sequence number with no gaps, and rebuild it from Postgres otherwise. A Redis outage degrades
to reading Postgres. The customer is part of the key: sequence numbers alone cannot tell one
conversation's turns from another's, so a conversation id that comes back for someone else (a
restored database, a shared Redis) must not find the old owner's turns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings

from ledgerly.redis_keys import prefixed
from memory.models import Conversation, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    seq: int
    role: str
    content: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "role": self.role, "content": self.content})


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def client() -> redis.Redis:
    return _client_for(settings.REDIS_URL)


def key(conversation: Conversation) -> str:
    return prefixed(f"memory:customer:{conversation.customer_id}:conv:{conversation.pk}:recent")


def append(*, conversation: Conversation, turn: Turn) -> None:
    """Add `turn` to the hot copy if there is one (call after the message is committed)."""
    limit = settings.CONVERSATION_HOT_TURNS
    name = key(conversation)
    try:
        pipe = client().pipeline(transaction=True)
        pipe.rpushx(name, turn.to_json())
        pipe.ltrim(name, -limit, -1)
        pipe.expire(name, settings.CONVERSATION_HOT_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        # The hot copy is an optimisation; readers fall back to Postgres.
        log.warning("hot copy append failed for conversation %s", conversation.pk, exc_info=True)


def _from_postgres(conversation_id: int, limit: int) -> list[Turn]:
    rows = Message.objects.filter(conversation_id=conversation_id).order_by("-seq")[:limit]
    return [Turn(seq=m.seq, role=m.role, content=m.content) for m in reversed(rows)]


def _consistent(turns: list[Turn], last_seq: int, limit: int) -> bool:
    if not turns:
        return last_seq == 0
    seqs = [t.seq for t in turns]
    contiguous = seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    complete = len(turns) == min(limit, last_seq)
    return contiguous and complete and seqs[-1] == last_seq


def recent_turns(*, conversation: Conversation) -> list[Turn]:
    """The last CONVERSATION_HOT_TURNS turns, oldest first: from Redis when its copy is
    complete and current, else from Postgres (and the copy is rebuilt)."""
    limit = settings.CONVERSATION_HOT_TURNS
    last_seq = Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation.pk)
    try:
        raw = client().lrange(key(conversation), 0, -1)
    except redis.RedisError:
        log.warning("hot copy unreadable for conversation %s", conversation.pk, exc_info=True)
        return _from_postgres(conversation.pk, limit)
    turns = [Turn(**json.loads(item)) for item in raw]  # type: ignore[union-attr]
    if raw and _consistent(turns, last_seq, limit):
        return turns
    turns = _from_postgres(conversation.pk, limit)
    rebuild(conversation=conversation, turns=turns)
    return turns


def rebuild(*, conversation: Conversation, turns: list[Turn]) -> None:
    """Replace the hot copy with `turns` in one MULTI/EXEC (readers never see half of it)."""
    if not turns:
        return
    name = key(conversation)
    try:
        pipe = client().pipeline(transaction=True)
        pipe.delete(name)
        pipe.rpush(name, *(t.to_json() for t in turns))
        pipe.expire(name, settings.CONVERSATION_HOT_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        log.warning("hot copy rebuild failed for conversation %s", conversation.pk, exc_info=True)


def drop(*, conversation: Conversation) -> int:
    """Delete the hot copy; 1 if there was one. A Redis outage is logged and counts 0 (the
    copy then expires after CONVERSATION_HOT_TTL_SECONDS)."""
    try:
        return int(client().delete(key(conversation)))  # type: ignore[arg-type]
    except redis.RedisError:
        log.warning("hot copy delete failed for conversation %s", conversation.pk, exc_info=True)
        return 0
