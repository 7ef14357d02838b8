"""`LLM_SIMULATOR_URL` points the gateway at a simulator served over HTTP (load tests, a
`make run` against a shared simulator): the same gateway, the same records, over a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.conf import build_config
from ledgerly.llm.models import LLMCall

from .conftest import run_ctx, user

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def simulator_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledgerly.llm.simulator",
            "--port",
            str(port),
            "--latency-median-ms",
            "0",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.django_db
def test_gateway_answers_from_a_simulator_served_over_http(settings, redis_client, simulator_url):
    settings.LLM_SIMULATOR_URL = simulator_url
    gw = gateway_module.Gateway(build_config())
    gateway_module.install(gw)
    try:
        completion = gateway_module.complete(
            ctx=run_ctx(),
            tier="small",
            purpose="summarise",
            prompt="summarise_conversation",
            messages=user("I was charged twice for invoice INV-1 and want my money back."),
            max_tokens=200,
            fallback="static",
        )
    finally:
        gateway_module.install(None)
    assert gw.simulated is True
    assert completion.simulated is True
    assert completion.text
    call = LLMCall.objects.get(pk=completion.call_id)
    assert call.request_id.startswith("req_sim_")
    assert call.model == "claude-haiku-5-5"
