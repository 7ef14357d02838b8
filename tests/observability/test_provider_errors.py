"""A 401 from the model provider is counted (the page-at-once alert reads it) and not retried."""

from __future__ import annotations

import httpx2
import pytest
from prometheus_client import REGISTRY

from ledgerly import llm
from ledgerly.llm.models import LLMCall


class Unauthorized(httpx2.BaseTransport):
    def __init__(self) -> None:
        self.requests = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        body = {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }
        return httpx2.Response(401, json=body, request=request)


@pytest.mark.django_db(transaction=True)
def test_a_401_is_counted_by_model_and_status_and_never_retried(sim_gateway):
    transport = Unauthorized()
    gateway = sim_gateway(transport=transport)
    model = gateway.config.models["small"]
    labels = {"model": model, "status": "401"}
    before = REGISTRY.get_sample_value("ledgerly_llm_provider_errors_total", labels) or 0.0
    ctx = llm.CallContext.starting_now(
        run_id="run-obs-401", ticket_id="401", customer_ref="cus_obs", seconds=30
    )
    with pytest.raises(llm.ModelCallFailed):
        llm.complete(
            ctx=ctx,
            tier="small",
            purpose="route",
            prompt="route_ticket",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=50,
            fallback="none",
        )
    after = REGISTRY.get_sample_value("ledgerly_llm_provider_errors_total", labels)
    assert after == before + 1
    assert transport.requests == 1
    assert LLMCall.objects.get(run_id="run-obs-401").outcome == LLMCall.Outcome.BAD_REQUEST
