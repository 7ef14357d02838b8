# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""`python -m ledgerly.llm.simulator` serves the same API over HTTP and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else b""
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"simulator did not listen on {port}")


@pytest.fixture
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_SIMULATOR_SEED": "3"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledgerly.llm.simulator",
            "--port",
            str(port),
            "--latency-median-ms",
            "200",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for_port(port, process)
    yield f"http://127.0.0.1:{port}", process
    process.kill()
    process.wait(timeout=10)


PARAMS = {
    "model": "claude-haiku-5-5",
    "max_tokens": 300,
    "messages": [{"role": "user", "content": "I was charged twice for INV-77, refund me please."}],
}


@pytest.mark.slow
def test_http_server_streams_events_over_time_and_stops_cleanly_on_sigterm(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base_url, process = server
    client = anthropic.Anthropic(api_key="sk-sim", base_url=base_url, max_retries=0)
    arrivals: list[float] = []
    with client.messages.stream(**PARAMS, extra_headers={"x-sim-latency-ms": "400"}) as stream:
        for _event in stream:
            arrivals.append(time.monotonic())
        streamed = stream.get_final_message()
    plain = client.messages.with_raw_response.create(**PARAMS)

    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=10)
    output = process.stdout.read().decode() if process.stdout else ""

    assert streamed.content[0].text == plain.parse().content[0].text
    assert plain.headers["x-ledgerly-simulator"] == "1"
    assert arrivals[-1] - arrivals[0] > 0.15  # 60% of the 400 ms is spread over the events
    assert code == 0
    assert "SIMULATOR (offline, not Claude) listening" in output
    assert "simulator stopped" in output


@pytest.mark.slow
def test_http_truncated_stream_drops_the_connection(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base_url, _ = server
    client = anthropic.Anthropic(api_key="sk-sim", base_url=base_url, max_retries=0)
    stream = client.messages.stream(**PARAMS, extra_headers={"x-sim-fault": "truncated_stream"})

    with pytest.raises(httpx2.RemoteProtocolError), stream as events:
        events.get_final_message()
