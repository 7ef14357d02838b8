"""Message Batches under the faults found in review: a dated model id in the answers, a poll
redelivered while another is recording, a submission the provider refuses."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading

import httpx2
import pytest
from django.db import connection
from django.utils import timezone

from ledgerly import llm
from ledgerly.llm.batches import batch_poll, batch_submit
from ledgerly.llm.conf import config
from ledgerly.llm.gateway import Gateway
from ledgerly.llm.models import LLMBatch, LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd, to_micro_usd
from ledgerly.llm.simulator import SimulatorTransport
from tests.llm.conftest import run_ctx, user

pytestmark = pytest.mark.django_db

DATED = "claude-haiku-5-5-20261001"


def one_request(custom_id: str = "x") -> list[llm.BatchRequest]:
    return [
        llm.BatchRequest(
            custom_id=custom_id,
            tier="small",
            prompt="route_ticket",
            messages=user("hi"),
            max_tokens=50,
        )
    ]


class AnswersWithTheSnapshotId(httpx2.BaseTransport):
    """Like the API called through an alias: answers name the dated snapshot that served."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        body = response.read().replace(b'"claude-haiku-5-5"', f'"{DATED}"'.encode())
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length",)
        }
        return httpx2.Response(response.status_code, headers=headers, content=body, request=request)


def test_batch_answers_naming_a_dated_snapshot_are_priced_and_recorded(make_gateway):
    make_gateway()
    gateway = Gateway(inner_transport=AnswersWithTheSnapshotId(SimulatorTransport()))
    batch = batch_submit(ctx=run_ctx(), key="dated", requests=one_request("a"), gateway=gateway)

    [result] = batch_poll(batch=batch, gateway=gateway) or []

    row = LLMCall.objects.get(pk=result.call_id)
    usage = TokenUsage(row.input_tokens, row.output_tokens)
    assert result.outcome == "succeeded"
    assert (result.model, row.model) == (DATED, DATED)
    assert (
        row.cost_usd == result.cost_usd == cost_usd(config().price("claude-haiku-5-5"), usage) / 2
    )
    assert row.cost_usd > 0
    assert gateway.budgets.spent()["global_day"] >= row.cost_usd * 1_000_000


class RefusesBatches(httpx2.BaseTransport):
    """A provider that answers batch submissions with an overloaded error."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and request.url.path == "/v1/messages/batches":
            return httpx2.Response(
                529,
                headers={"x-should-retry": "false"},
                json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                request=request,
            )
        return self.inner.handle_request(request)


def test_a_refused_submission_gives_back_its_reservation_and_its_key(make_gateway):
    make_gateway()
    refusing = Gateway(inner_transport=RefusesBatches(SimulatorTransport()))

    with pytest.raises(llm.Defer):
        batch_submit(ctx=run_ctx(), key="retry-me", requests=one_request(), gateway=refusing)

    assert not LLMBatch.objects.exists()
    assert refusing.budgets.spent()["global_day"] == 0
    working = Gateway(inner_transport=SimulatorTransport())
    batch = batch_submit(ctx=run_ctx(), key="retry-me", requests=one_request(), gateway=working)
    assert batch.state == "processing"


@pytest.mark.django_db(transaction=True)
def test_two_polls_at_once_record_an_ended_batch_once(gateway):
    # A poll redelivered (or the sweep catching up) while another poller is recording.
    batch = batch_submit(ctx=run_ctx(run_id="race"), key="race", requests=one_request("r"))
    barrier = threading.Barrier(2)

    def poll(_: int) -> list[str]:
        try:
            barrier.wait()
            return [r.outcome for r in batch_poll(batch=LLMBatch.objects.get(pk=batch.pk)) or []]
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(poll, range(2)))

    row = LLMCall.objects.get()
    assert outcomes == [["succeeded"], ["succeeded"]]
    assert gateway.budgets.spent(run_id="race")["run_usd"] == to_micro_usd(row.cost_usd)


class CannotBeAsked(httpx2.BaseTransport):
    """A provider that accepts batches and then fails every request about them."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/messages/batches/"):
            return httpx2.Response(
                500,
                headers={"x-should-retry": "false"},
                json={"type": "error", "error": {"type": "api_error", "message": "down"}},
                request=request,
            )
        return self.inner.handle_request(request)


def test_a_poll_the_provider_cannot_answer_defers_to_the_next_poll(make_gateway):
    make_gateway()
    gateway = Gateway(inner_transport=CannotBeAsked(SimulatorTransport()))
    batch = batch_submit(
        ctx=run_ctx(), key="down", requests=one_request(), poll_seconds=45, gateway=gateway
    )
    LLMBatch.objects.filter(pk=batch.pk).update(next_poll_at=timezone.now())

    with pytest.raises(llm.Defer) as caught:
        batch_poll(batch=batch, gateway=gateway)

    batch.refresh_from_db()
    assert caught.value.seconds == 45
    assert batch.state == "processing"
    assert batch.next_poll_at is not None
    assert batch.next_poll_at > timezone.now() + dt.timedelta(seconds=40)
