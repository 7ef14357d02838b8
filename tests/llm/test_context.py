"""Every call belongs to a run: the CallContext, and what complete() does with it."""

from __future__ import annotations

import datetime as dt

import httpx2
import pytest
from django.db import transaction

from ledgerly import llm
from ledgerly.llm import CallContext
from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.context import LABEL_MAX_LENGTH
from ledgerly.llm.models import LLMCall
from tests.llm.conftest import run_ctx, user

SOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def make(**overrides: object) -> CallContext:
    fields: dict[str, object] = {
        "run_id": "run_1",
        "ticket_id": "1001",
        "customer_ref": "cus_ana",
        "deadline_at": SOON,
    }
    return CallContext(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"run_id": ""}, "run_id is required"),
        ({"customer_ref": ""}, "customer_ref is required"),
        ({"deadline_at": dt.datetime(2026, 12, 1, 12, 0)}, "timezone-aware"),  # noqa: DTZ001
        ({"run_id": "r" * 65}, "run_id must be at most 64"),
        ({"ticket_id": "t" * 65}, "ticket_id must be at most 64"),
        ({"customer_ref": "c" * 65}, "customer_ref must be at most 64"),
        ({"run_id": 42}, "run_id must be a str"),
    ],
)
def test_a_context_the_call_record_or_the_budgets_cannot_key_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_a_run_not_about_a_ticket_has_an_empty_ticket_id():
    assert make(ticket_id="").ticket_id == ""


def test_the_label_limit_is_what_the_call_record_holds():
    for name in ("run_id", "ticket_id", "customer_id", "purpose"):
        field = LLMCall._meta.get_field(name)
        assert getattr(field, "max_length", None) == LABEL_MAX_LENGTH


def test_a_context_survives_a_checkpoint_as_a_dict():
    ctx = make(
        deadline_at=dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    )

    stored = ctx.as_dict()

    assert stored == {
        "run_id": "run_1",
        "ticket_id": "1001",
        "customer_ref": "cus_ana",
        "deadline_at": "2026-12-01T13:00:00+01:00",
    }
    assert CallContext.from_dict(stored) == ctx
    assert CallContext.from_dict(stored).seconds_left(now=SOON) == 0.0  # 12:00 UTC is 13:00 +01


@pytest.mark.parametrize(
    "stored",
    [
        {"run_id": "r", "ticket_id": "", "customer_ref": "cus_a"},
        {"run_id": "r", "ticket_id": "", "customer_ref": "cus_a", "deadline_at": "soon"},
        {
            "run_id": "r",
            "ticket_id": "",
            "customer_ref": "cus_a",
            "deadline_at": "2026-12-01T12:00",
        },
    ],
)
def test_a_stored_context_that_is_not_one_is_refused(stored):
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        CallContext.from_dict(stored)


def test_seconds_left_counts_down_to_zero():
    ctx = make()

    assert ctx.seconds_left(now=SOON - dt.timedelta(seconds=90)) == 90.0
    assert ctx.seconds_left(now=SOON + dt.timedelta(seconds=5)) == 0.0


def test_starting_now_sets_the_deadline_from_now():
    before = dt.datetime.now(dt.UTC)
    ctx = CallContext.starting_now(run_id="r", ticket_id="", customer_ref="cus_a", seconds=60)

    assert before + dt.timedelta(seconds=60) <= ctx.deadline_at
    assert ctx.deadline_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    assert 59 < ctx.seconds_left() <= 60


def test_the_context_is_exported_without_touching_django_models():
    assert llm.CallContext is CallContext


def test_a_call_without_its_run_is_refused():
    with pytest.raises(TypeError):
        llm.complete(  # type: ignore[call-arg]
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="none",
        )


@pytest.mark.django_db
def test_every_call_counts_against_its_run_and_its_customer(gateway):
    ctx = run_ctx(run_id="run_7", ticket_id="1007", customer_ref="cus_ben")

    completion = llm.complete(
        ctx=ctx,
        tier="small",
        purpose="route",
        prompt="route_ticket",
        messages=user("Where is my invoice?"),
        max_tokens=50,
        fallback="none",
    )

    row = LLMCall.objects.get(pk=completion.call_id)
    spent = gateway.budgets.spent(run_id="run_7", customer_id="cus_ben")
    micro = int(completion.cost_usd * 1_000_000)
    assert (row.run_id, row.ticket_id, row.customer_id) == ("run_7", "1007", "cus_ben")
    assert micro <= spent["run_usd"] == spent["customer_day"] <= micro + 1
    assert spent["run_tokens"] == sum(completion.usage.values())


@pytest.mark.django_db
def test_the_deadline_of_a_checkpointed_context_bounds_the_call(gateway):
    # Written by another worker: only the wall-clock deadline travels.
    stored = run_ctx(run_id="late", seconds=-1).as_dict()

    with pytest.raises(llm.ModelUnavailable) as caught:
        llm.complete(
            ctx=CallContext.from_dict(stored),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="small",
        )

    assert caught.value.outcomes == ["deadline"]
    assert list(LLMCall.objects.values_list("outcome", flat=True)) == ["deadline"]


class Counting(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner, self.requests = inner, 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        return self.inner.handle_request(request)


@pytest.mark.django_db
def test_a_call_inside_a_transaction_is_refused_before_anything_is_spent(make_gateway, simulator):
    # Its record would live in the caller's transaction: a rollback would lose a paid call.
    make_gateway()
    provider = Counting(simulator)
    gateway = gateway_module.Gateway(inner_transport=provider)
    gateway_module.install(gateway)

    with pytest.raises(llm.CalledInsideTransaction), transaction.atomic():
        llm.complete(
            ctx=run_ctx(run_id="inside"),
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=user("x"),
            max_tokens=20,
            fallback="static",
        )

    assert not LLMCall.objects.exists()
    assert gateway.budgets.spent(run_id="inside")["run_usd"] == 0
    assert provider.requests == 0
