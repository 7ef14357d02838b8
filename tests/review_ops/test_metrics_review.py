"""Review of /metrics: a missing or damaged multiprocess directory, and who may read it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.observability.test_metrics import _samples

ROOT = Path(__file__).resolve().parents[2]
LIST_CHARGES_OK = (("outcome", "ok"), ("tool", "list_charges"))

COUNT_AND_SCRAPE = """
import django; django.setup()
from ledgerly import metrics
metrics.TOOL_CALLS.labels("list_charges", "ok").inc(3)
print(metrics.exposition().decode())
"""


def _env(directory: Path, test_database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
        "DATABASE_URL": test_database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }


def _count(directory: Path, test_database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", COUNT_AND_SCRAPE],
        cwd=ROOT,
        env=_env(directory, test_database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_multiprocess_directory_breaks_neither_counting_nor_the_scrape(
    tmp_path, test_database_url
):
    # A container whose volume is not mounted, a /tmp cleaned under a running machine: a
    # process must still count (every model call counts) and a scrape must still answer.
    directory = tmp_path / "not-made-yet"
    done = _count(directory, test_database_url)
    assert done.returncode == 0, done.stderr[-2000:]
    samples = _samples(done.stdout)
    assert samples[("ledgerly_tool_calls_total", LIST_CHARGES_OK)] == 3


@pytest.mark.django_db
def test_a_file_a_dead_process_left_unwritten_does_not_fail_the_scrape(
    client, tmp_path, test_database_url, monkeypatch
):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    assert _count(directory, test_database_url).returncode == 0  # a process counted, then exited
    (directory / "counter_999999.db").write_bytes(b"")  # killed right after making its file
    (directory / "histogram_999998.db").write_bytes(b"\x10\x00\x00\x00")  # or mid-write
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))

    response = client.get("/metrics")

    assert response.status_code == 200
    samples = _samples(response.content.decode())
    assert samples[("ledgerly_tool_calls_total", LIST_CHARGES_OK)] == 3
    assert samples[("ledgerly_scrape_errors", (("collector", "multiprocess"),))] == 1.0


@pytest.mark.django_db
def test_the_scrape_answers_when_the_directory_went_away(client, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "gone"))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"ledgerly_scrape_errors" in response.content


@pytest.mark.django_db
def test_in_production_metrics_are_served_only_to_the_scraper_with_the_token(client, settings):
    # The web port is the public one: without a token configured, production serves no figures
    # (costs, refund decisions, budget) to the internet; workers' METRICS_PORT stays internal.
    settings.PRODUCTION = True
    settings.METRICS_TOKEN = None
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = "scrape-token-2"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    good = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-2")
    assert good.status_code == 200
    assert b"ledgerly_scrape_errors" in good.content


@pytest.mark.django_db
def test_in_development_metrics_stay_open(client, settings):
    settings.PRODUCTION = False
    settings.METRICS_TOKEN = None
    assert client.get("/metrics").status_code == 200
