from __future__ import annotations

from typing import Any

import pytest

from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.context import CallContext
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

ROUTE_SCHEMA = {
    "type": "object",
    "properties": {
        "lane": {"type": "string", "enum": ["faq", "refund", "complex"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["lane", "confidence", "reason"],
    "additionalProperties": False,
}

LOOKUP_TOOL = {
    "name": "lookup_charge",
    "description": "Look up one of the customer's charges by its reference (ch_...).",
    "input_schema": {
        "type": "object",
        "properties": {"charge_ref": {"type": "string", "pattern": "^ch_"}},
        "required": ["charge_ref"],
        "additionalProperties": False,
    },
}


@pytest.fixture
def simulator() -> SimulatorTransport:
    """A zero-latency simulator whose faults ask for tiny retry-after waits."""
    return SimulatorTransport(SimulatorConfig(retry_after_s=0.01))


@pytest.fixture
def make_gateway(redis_client, simulator, settings):
    """Builds (from the current settings) and installs this process's gateway, answering from
    `simulator`, with 1 SDK retry, a 2 s wait cap and a breaker that opens after 3 failures."""
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_RETRY_AFTER_CAP_SECONDS = 2.0
    settings.LLM_BREAKER_FAILURES = 3

    def make() -> gateway_module.Gateway:
        gw = gateway_module.Gateway(inner_transport=simulator)
        gateway_module.install(gw)
        return gw

    yield make
    gateway_module.install(None)


@pytest.fixture
def gateway(make_gateway):
    return make_gateway()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def run_ctx(
    run_id: object = "run-test",
    ticket_id: object = "",
    customer_ref: object = "cus_test",
    *,
    seconds: float = 30.0,
) -> CallContext:
    """The run a test's call belongs to (ids given as numbers are written as strings)."""
    return CallContext.starting_now(
        run_id=str(run_id),
        ticket_id=str(ticket_id),
        customer_ref=str(customer_ref),
        seconds=seconds,
    )
