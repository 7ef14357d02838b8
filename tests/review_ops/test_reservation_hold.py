"""Review of the reservation sweep: it must never give back the reservation of a call still
running. LLM_RESERVATION_HOLD_SECONDS is checked to exceed the longest call
((retries + 1) x (call timeout + retry-after cap)), but the SDK's timeout is per read: a stream
whose tokens keep coming, each within the timeout, ran for as long as the model wrote."""

from __future__ import annotations

import threading
import time

import pytest

from ledgerly import llm
from tests.llm.conftest import make_gateway, run_ctx, simulator, user  # noqa: F401

HOLD = 4.0


@pytest.mark.django_db(transaction=True)
def test_a_stream_that_outlives_its_hold_is_cut_before_the_sweep_can_free_its_room(
    make_gateway,  # noqa: F811
    settings,
):
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_CALL_TIMEOUT_SECONDS = 3.0
    settings.LLM_RETRY_AFTER_CAP_SECONDS = 0.5  # the longest call: 3.5 s
    settings.LLM_RESERVATION_HOLD_SECONDS = HOLD
    gateway = make_gateway()
    outcome: dict[str, object] = {}
    deltas: list[str] = []

    def call() -> None:
        started = time.monotonic()
        try:
            outcome["completion"] = llm.complete(
                ctx=run_ctx(run_id="slow-stream", seconds=60),
                tier="small",
                purpose="faq_answer",
                prompt="faq_answer",
                messages=user("How do I download an invoice as a PDF?"),
                max_tokens=400,
                fallback="none",
                # First token after 2.8 s (within the 3 s read timeout), the rest over 4.2 s.
                extra_headers={"x-sim-latency-ms": "7000"},
                on_text=deltas.append,
            )
        except llm.LLMError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(HOLD + 1.0)
    swept = gateway.budgets.sweep()  # beat's sweep, past the hold
    worker.join(timeout=30)

    assert not worker.is_alive()
    assert swept.released == 0, "the sweep gave back the reservation of a call in flight"
    assert float(outcome["seconds"]) < HOLD  # type: ignore[arg-type]
    assert "error" in outcome  # cut at the call's timeout: unavailable, never silently long
    assert gateway.budgets.open_reservations() == 0
    # Cut mid-body, the provider may have charged: the worst case stays counted.
    assert gateway.budgets.spent(run_id="slow-stream")["run_usd"] > 0
