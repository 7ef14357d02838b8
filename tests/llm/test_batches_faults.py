"""Message Batches under the faults found in review: a dated model id in the answers, a batch
that outlives the caller's patience."""

from __future__ import annotations

import httpx2
import pytest

from ledgerly import llm
from ledgerly.llm.conf import config
from ledgerly.llm.gateway import Gateway
from ledgerly.llm.models import LLMCall
from ledgerly.llm.pricing import TokenUsage, cost_usd
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from tests.llm.conftest import user

pytestmark = pytest.mark.django_db

DATED = "claude-haiku-5-5-20261001"


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
    request = llm.BatchRequest(
        custom_id="a", tier="small", prompt="route_ticket", messages=user("hi"), max_tokens=50
    )

    [result] = llm.run_batch([request], poll_seconds=0.01, gateway=gateway)

    row = LLMCall.objects.get(pk=result.call_id)
    usage = TokenUsage(row.input_tokens, row.output_tokens)
    assert result.outcome == "succeeded"
    assert (result.model, row.model) == (DATED, DATED)
    assert (
        row.cost_usd == result.cost_usd == cost_usd(config().price("claude-haiku-5-5"), usage) / 2
    )
    assert row.cost_usd > 0
    assert gateway.budgets.spent()["global_day"] >= row.cost_usd * 1_000_000


def test_a_batch_given_up_on_is_cancelled_and_stays_counted(make_gateway):
    make_gateway()
    simulator = SimulatorTransport(SimulatorConfig(batch_delay_s=30))
    gateway = Gateway(inner_transport=simulator)
    request = llm.BatchRequest(
        custom_id="late", tier="small", prompt="route_ticket", messages=user("hi"), max_tokens=50
    )

    with pytest.raises(llm.ModelCallFailed, match="did not end"):
        llm.run_batch([request], poll_seconds=0.01, timeout_seconds=0.05, gateway=gateway)

    [batch] = gateway.client.messages.batches.list().data
    assert batch.processing_status in ("canceling", "ended")
    assert batch.cancel_initiated_at is not None
    # What the provider may still bill stays reserved: the budget is not handed back.
    assert gateway.budgets.spent()["global_day"] > 0
