"""Fixtures: the real anthropic SDK over an in-process SimulatorTransport."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transport(clock: FakeClock) -> SimulatorTransport:
    return SimulatorTransport(SimulatorConfig(clock=clock, sleep=clock.sleep))


@pytest.fixture
def client(transport: SimulatorTransport) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-sim-test",
        base_url="https://api.anthropic.com",
        http_client=httpx2.Client(transport=transport),
        max_retries=3,
    )
