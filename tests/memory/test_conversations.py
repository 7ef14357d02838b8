"""Conversation history: Postgres is the truth, Redis holds a rebuildable hot copy."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connections

from memory import hot, services
from memory.models import Message


def _conversation_with(customer, n):
    conversation = services.conversation_start(customer=customer)
    for i in range(1, n + 1):
        role = "customer" if i % 2 else "assistant"
        services.message_append(conversation=conversation, role=role, content=f"turn {i}")
    return conversation


def _hot_seqs(redis_client, conversation):
    return [json.loads(x)["seq"] for x in redis_client.lrange(hot.key(conversation), 0, -1)]


@pytest.mark.django_db(transaction=True)
def test_messages_get_consecutive_sequence_numbers(customer, redis_client):
    conversation = _conversation_with(customer, 5)

    assert list(
        Message.objects.filter(conversation=conversation).values_list("seq", "content")
    ) == [(i, f"turn {i}") for i in range(1, 6)]
    assert conversation.last_seq == 5


@pytest.mark.django_db(transaction=True)
def test_recent_turns_are_rebuilt_from_postgres_when_the_redis_key_is_gone(
    customer, redis_client, settings
):
    settings.CONVERSATION_HOT_TURNS = 8
    conversation = _conversation_with(customer, 12)
    expected = [(i, f"turn {i}") for i in range(5, 13)]
    assert [(t.seq, t.content) for t in hot.recent_turns(conversation=conversation)] == expected

    redis_client.delete(hot.key(conversation))
    rebuilt = hot.recent_turns(conversation=conversation)

    assert [(t.seq, t.content) for t in rebuilt] == expected
    assert _hot_seqs(redis_client, conversation) == list(range(5, 13))


@pytest.mark.django_db(transaction=True)
def test_appends_extend_the_hot_copy_and_keep_it_capped(customer, redis_client, settings):
    settings.CONVERSATION_HOT_TURNS = 4
    conversation = _conversation_with(customer, 3)
    hot.recent_turns(conversation=conversation)  # builds the copy

    for i in range(4, 8):
        services.message_append(conversation=conversation, role="customer", content=f"turn {i}")

    assert _hot_seqs(redis_client, conversation) == [4, 5, 6, 7]
    assert [t.seq for t in hot.recent_turns(conversation=conversation)] == [4, 5, 6, 7]


@pytest.mark.django_db(transaction=True)
def test_a_hot_copy_missing_the_latest_turn_is_detected_and_rebuilt(customer, redis_client):
    conversation = _conversation_with(customer, 6)
    hot.recent_turns(conversation=conversation)
    redis_client.rpop(hot.key(conversation))  # as if the append after commit was lost

    turns = hot.recent_turns(conversation=conversation)

    assert [t.seq for t in turns] == [1, 2, 3, 4, 5, 6]
    assert _hot_seqs(redis_client, conversation) == [1, 2, 3, 4, 5, 6]


@pytest.mark.django_db(transaction=True)
def test_recent_turns_come_from_postgres_when_redis_is_down(customer, redis_client, settings):
    conversation = _conversation_with(customer, 3)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    services.message_append(conversation=conversation, role="customer", content="turn 4")
    turns = hot.recent_turns(conversation=conversation)

    assert [t.content for t in turns] == ["turn 1", "turn 2", "turn 3", "turn 4"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_threads_get_unique_gap_free_sequence_numbers(
    customer, redis_client, settings
):
    settings.CONVERSATION_HOT_TURNS = 100
    conversation = _conversation_with(customer, 1)
    hot.recent_turns(conversation=conversation)  # the hot copy exists while the writers race
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for i in range(10):
                services.message_append(
                    conversation=conversation, role="customer", content=f"{name}-{i}"
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    seqs = list(Message.objects.filter(conversation=conversation).values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, 42))
    turns = hot.recent_turns(conversation=conversation)
    assert [t.seq for t in turns] == list(range(1, 42))
    assert sorted(t.content for t in turns[1:]) == sorted(
        f"w{n}-{i}" for n in range(4) for i in range(10)
    )
