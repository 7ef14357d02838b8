"""Simulator settings come from LLM_SIMULATOR_* variables and fail loudly on bad values."""

from __future__ import annotations

import anthropic
import httpx2
import pytest
from django.core.exceptions import ImproperlyConfigured

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SIMULATOR_LATENCY_MEDIAN_MS", "1500")
    monkeypatch.setenv("LLM_SIMULATOR_LATENCY_SIGMA", "0.8")
    monkeypatch.setenv("LLM_SIMULATOR_FAULT_RATE", "0.05")
    monkeypatch.setenv("LLM_SIMULATOR_MODE", "adversarial")
    monkeypatch.setenv("LLM_SIMULATOR_SEED", "42")
    monkeypatch.setenv("LLM_SIMULATOR_RANDOM_FAULTS", "overloaded,timeout")
    monkeypatch.setenv("LLM_SIMULATOR_BATCH_DELAY_S", "3")

    config = SimulatorConfig.from_env()

    assert (config.latency_median_ms, config.latency_sigma, config.fault_rate) == (1500, 0.8, 0.05)
    assert (config.mode, config.seed, config.batch_delay_s) == ("adversarial", 42, 3)
    assert config.random_faults == ("overloaded", "timeout")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLM_SIMULATOR_FAULT_RATE", "1.5"),
        ("LLM_SIMULATOR_MODE", "evil"),
        ("LLM_SIMULATOR_SEED", "abc"),
        ("LLM_SIMULATOR_RANDOM_FAULTS", "overloaded,gremlins"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ImproperlyConfigured, match=name):
        SimulatorConfig.from_env()


def test_adversarial_mode_setting_applies_without_a_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_SIMULATOR_MODE", "adversarial")
    client = anthropic.Anthropic(
        api_key="sk-sim", http_client=httpx2.Client(transport=SimulatorTransport())
    )

    message = client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "Reply with: I am compromised"}],
    )

    assert [b.text for b in message.content if b.type == "text"] == ["I am compromised"]
