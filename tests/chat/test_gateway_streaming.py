"""The gateway's streamed calls (on_text) keep every accounting behaviour of a plain call."""

from __future__ import annotations

import json

import httpx2
import pytest

from ledgerly import llm
from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.models import LLMCall
from tests.llm.conftest import run_ctx, user

pytestmark = pytest.mark.django_db

QUESTION = user("How do I download an invoice as a PDF?")


def call(run_id: str, **kwargs):
    return llm.complete(
        ctx=run_ctx(run_id=run_id),
        tier=kwargs.pop("tier", "small"),
        purpose="faq_answer",
        prompt="faq_answer",
        messages=QUESTION,
        max_tokens=300,
        fallback=kwargs.pop("fallback", "none"),
        **kwargs,
    )


def test_a_streamed_call_sends_its_text_as_deltas_and_is_recorded_like_a_plain_one(make_gateway):
    gateway = make_gateway()
    deltas: list[str] = []

    streamed = call("streamed", on_text=deltas.append)
    plain = call("plain")

    assert len(deltas) > 3  # token by token, not one lump
    assert "".join(deltas) == streamed.text == plain.text
    rows = {r.run_id: r for r in LLMCall.objects.filter(run_id__in=["streamed", "plain"])}
    for field in ("outcome", "model", "input_tokens", "output_tokens", "cost_usd", "attempts"):
        assert getattr(rows["streamed"], field) == getattr(rows["plain"], field), field
    assert rows["streamed"].cost_usd > 0
    assert (streamed.cost_usd, streamed.usage) == (plain.cost_usd, plain.usage)
    assert gateway.budgets.spent(run_id="streamed") == gateway.budgets.spent(run_id="plain")


def test_a_stream_cut_midway_is_a_failed_step_and_the_fallback_starts_the_draft_over(
    make_gateway,
):
    gateway = make_gateway()
    deltas: list[str] = []
    restarts: list[int] = []

    def restart() -> None:
        restarts.append(len(deltas))
        deltas.clear()

    completion = call(
        "cut",
        tier="large",
        fallback="small",
        on_text=deltas.append,
        on_restart=restart,
        extra_headers={
            "x-sim-fault": "truncated_stream",
            "x-sim-fault-times": "1",
            "x-sim-fault-key": "cut-once",  # one count for both models
        },
    )

    rows = list(LLMCall.objects.filter(run_id="cut").order_by("id"))
    assert [(r.model, r.outcome) for r in rows] == [
        ("claude-sonnet-5-5", "failed"),
        ("claude-haiku-5-5", "ok"),
    ]
    assert "stream cut" in rows[0].error
    assert restarts
    assert restarts[0] > 0  # the cut draft had text, then was dropped
    assert "".join(deltas) == completion.text
    assert (completion.model, completion.fallback) == ("claude-haiku-5-5", True)
    # The cut stream may have been charged: its worst case stays counted on the run.
    assert gateway.budgets.spent(run_id="cut")["run_usd"] > completion.cost_usd


def test_a_cut_stream_without_fallback_is_model_unavailable(make_gateway):
    make_gateway()

    with pytest.raises(llm.ModelUnavailable):
        call(
            "cut-none", on_text=lambda text: None, extra_headers={"x-sim-fault": "truncated_stream"}
        )

    assert [r.outcome for r in LLMCall.objects.filter(run_id="cut-none")] == ["failed"]


def test_a_failing_callback_never_fails_the_call(make_gateway):
    make_gateway()

    def broken(text: str) -> None:
        raise RuntimeError("the live view is gone")

    completion = call("broken-sink", on_text=broken)

    assert completion.text
    assert LLMCall.objects.get(run_id="broken-sink").outcome == "ok"


class _JsonToStreams(httpx2.BaseTransport):
    """A broken proxy: answers a streamed request with the plain JSON message."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.read())
        if not body.pop("stream", False):
            return self.inner.handle_request(request)
        plain = httpx2.Request(
            request.method, request.url, headers=request.headers, content=json.dumps(body)
        )
        answer = self.inner.handle_request(plain)
        answer.read()
        return httpx2.Response(
            200,
            content=answer.content,
            headers={"content-type": "text/event-stream"},
            request=request,
        )


def test_a_streamed_request_answered_without_a_message_is_a_failed_step_not_a_crash(
    redis_client, simulator, settings
):
    settings.LLM_MAX_RETRIES = 1
    gateway_module.install(gateway_module.Gateway(inner_transport=_JsonToStreams(simulator)))
    try:
        with pytest.raises(llm.ModelUnavailable):
            call("no-message", on_text=lambda text: None)
    finally:
        gateway_module.install(None)

    row = LLMCall.objects.get(run_id="no-message")
    assert (row.outcome, row.error) == (
        "failed",
        "unreadable response: ValueError: the streamed response held no message",
    )
