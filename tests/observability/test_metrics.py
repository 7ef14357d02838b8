"""/metrics: the sum over every process of the machine, plus the figures read at scrape time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

INCREMENT = """
import django; django.setup()
from ledgerly import metrics
from ledgerly.llm import metrics as llm_metrics
metrics.TOOL_CALLS.labels("list_charges", "ok").inc({n})
metrics.TICKETS_TERMINAL.labels("answered").inc()
llm_metrics.LATENCY.labels("claude-haiku-5-5", "small", "faq").observe({n} / 10)
llm_metrics.BUDGET_USED.set({n} / 10)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def multiproc_env(tmp_path, test_database_url) -> dict[str, str]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
        "DATABASE_URL": test_database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }


@pytest.fixture
def web(multiproc_env):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ledgerly.asgi:application", "--port", str(port)],
        cwd=ROOT,
        env=multiproc_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=5).close()  # noqa: S310
            break
        except OSError:
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=15)


@pytest.mark.slow
def test_one_scrape_sums_what_two_processes_counted(multiproc_env, web, redis_client):
    for n in (3, 4):
        subprocess.run(
            [sys.executable, "-c", INCREMENT.format(n=n)],
            cwd=ROOT,
            env=multiproc_env,
            check=True,
            timeout=120,
        )
    for _ in range(5):  # five messages wait in the Celery queue
        redis_client.lpush("celery", b"{}")

    with urllib.request.urlopen(web + "/metrics", timeout=15) as response:  # noqa: S310
        assert response.status == 200
        text = response.read().decode()
    samples = _samples(text)

    tool = (("outcome", "ok"), ("tool", "list_charges"))
    assert samples[("ledgerly_tool_calls_total", tool)] == 7.0
    assert samples[("ledgerly_tickets_terminal_total", (("state", "answered"),))] == 2.0
    latency = (("lane", "faq"), ("model", "claude-haiku-5-5"), ("tier", "small"))
    assert samples[("ledgerly_llm_latency_seconds_count", latency)] == 2.0
    assert samples[("ledgerly_llm_latency_seconds_sum", latency)] == pytest.approx(0.7)
    assert samples[("ledgerly_llm_global_budget_used_ratio", ())] == pytest.approx(0.4)
    assert samples[("ledgerly_queue_depth", (("queue", "celery"),))] == 5.0
    assert samples[("ledgerly_active_runs", (("status", "running"),))] == 0.0
    assert samples[("ledgerly_llm_breaker_open", (("model", "claude-haiku-5-5"),))] == 0.0
    scrape_errors = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "ledgerly_scrape_errors"
    }
    assert scrape_errors == {
        (("collector", "llm"),): 0.0,
        (("collector", "multiprocess"),): 0.0,
        (("collector", "queue"),): 0.0,
        (("collector", "support"),): 0.0,
    }


@pytest.mark.django_db
def test_a_dependency_down_at_scrape_time_is_one_error_sample_not_a_failed_scrape(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_free_port()}/0"
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.content.decode())
    assert samples[("ledgerly_scrape_errors", (("collector", "queue"),))] == 1.0
    assert samples[("ledgerly_scrape_errors", (("collector", "support"),))] == 0.0


@pytest.mark.slow
def test_a_worker_machine_serves_its_figures_on_metrics_port(celery_worker_process, tmp_path):
    directory = tmp_path / "worker-metrics"
    directory.mkdir()
    port = _free_port()
    celery_worker_process(
        concurrency=1, METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(directory)
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as response:
        samples = _samples(response.read().decode())
    assert samples[("ledgerly_queue_depth", (("queue", "celery"),))] == 0.0
    assert samples[("ledgerly_scrape_errors", (("collector", "queue"),))] == 0.0


@pytest.mark.django_db
def test_with_a_metrics_token_only_the_scraper_that_sends_it_is_answered(client, settings):
    settings.METRICS_TOKEN = "scrape-token-1"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-1")
    assert right.status_code == 200
    assert b"ledgerly_queue_depth" in right.content
