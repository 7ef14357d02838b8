"""Builds the `anthropic` SDK client: real Claude or the simulator, as LLM_BACKEND says.

Either way the SDK's own retry, timeout and parsing code runs, under the gateway's wrapper
transport (ledgerly/llm/transport.py).
"""

from __future__ import annotations

import anthropic
import httpx2
import structlog

from ledgerly.llm.conf import GatewayConfig
from ledgerly.llm.transport import GatewayTransport, RateObserver

log = structlog.get_logger(__name__)

SIMULATOR_API_KEY = "sk-sim-offline-ledgerly"  # the simulator checks a key is present, not which


def inner_transport(config: GatewayConfig) -> tuple[httpx2.BaseTransport, bool]:
    """The transport that really answers, and whether it is the simulator."""
    if config.backend == "anthropic":
        return httpx2.HTTPTransport(limits=anthropic.DEFAULT_CONNECTION_LIMITS), False
    if config.simulator_url:
        return httpx2.HTTPTransport(limits=anthropic.DEFAULT_CONNECTION_LIMITS), True
    from ledgerly.llm.simulator import SimulatorTransport

    return SimulatorTransport(), True


def build_client(
    config: GatewayConfig,
    *,
    inner: httpx2.BaseTransport | None = None,
    on_rate_headers: RateObserver | None = None,
) -> tuple[anthropic.Anthropic, bool]:
    """An SDK client whose requests pass through GatewayTransport; returns (client, simulated).

    `inner` replaces the answering transport (tests and the benchmark pass a SimulatorTransport
    they control); without `inner`, LLM_BACKEND decides (ledgerly/llm/conf.py).
    """
    simulated = inner is not None or config.backend != "anthropic"
    if inner is None:
        inner, simulated = inner_transport(config)
    if simulated:
        log.warning(
            "llm.simulator_answering",
            detail="LLM_BACKEND=simulator: the offline simulator, not Claude, answers model calls.",
        )
    transport = GatewayTransport(
        inner, retry_after_cap=config.retry_after_cap_seconds, on_rate_headers=on_rate_headers
    )
    client = anthropic.Anthropic(
        api_key=config.api_key if config.api_key and not simulated else SIMULATOR_API_KEY,
        base_url=(config.simulator_url if simulated and config.simulator_url else None)
        or "https://api.anthropic.com",
        http_client=httpx2.Client(transport=transport, timeout=config.call_timeout_seconds),
        max_retries=config.max_retries,
        timeout=config.call_timeout_seconds,
    )
    return client, simulated
