"""The deployment files are checked offline: no Docker engine runs here, but Debian's
docker-compose validates and renders the compose file without one."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ["migrate", "web", "worker", "beat"]


def _compose_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "POSTGRES_"))}
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    result = _compose_config(DJANGO_SECRET_KEY="a-test-secret")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_compose_file_validates():
    result = _compose_config("-q", DJANGO_SECRET_KEY="x")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_secret_key():
    result = _compose_config("-q")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    ("service", "image"), [("db", "pgvector/pgvector:pg16"), ("redis", "redis:7")]
)
def test_compose_uses_the_production_images(services, service, image):
    assert services[service]["image"] == image
    assert services[service]["healthcheck"]["test"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_are_configured_only_by_environment(services, service):
    spec = services[service]
    assert "env_file" not in spec
    assert spec["environment"]["LEDGERLY_ENV"] == "production"
    assert spec["environment"]["DATABASE_URL"].startswith("postgresql://ledgerly:")
    assert spec["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert spec["environment"]["DJANGO_SECRET_KEY"] == "a-test-secret"


@pytest.mark.parametrize("service", ["web", "worker", "beat"])
def test_app_services_start_after_migrations(services, service):
    assert services[service]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_worker_and_beat_run_celery(services):
    assert services["worker"]["command"][:4] == ["celery", "-A", "ledgerly", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "ledgerly", "beat"]


def test_dockerfile_is_multi_stage_non_root_with_a_liveness_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert users[-1] not in {"root", "0"}
    healthcheck = dockerfile.split("\nHEALTHCHECK ", 1)[1].split("\nCMD ", 1)[0]
    assert "/healthz" in healthcheck


def test_no_secret_is_baked_into_the_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    env_blocks = re.findall(r"^ENV (?:.*\\\n)*.*$", dockerfile, flags=re.MULTILINE)
    assert env_blocks
    assert not [b for b in env_blocks if re.search(r"SECRET|API_KEY|PASSWORD|DSN", b)]
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_image_runs_the_app_from_its_source_tree():
    # Installing the project into site-packages would make `celery -A ledgerly` import a copy
    # whose BASE_DIR has no prompts, help-center articles or templates beside it.
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n&]*", dockerfile)
    assert installs
    assert not [i for i in installs if re.search(r"\s(-e\s+)?\.(\[|\s|$)", i + " ")]
    assert "PYTHONPATH=/app" in dockerfile
    assert re.search(r"^WORKDIR /app$", dockerfile, flags=re.MULTILINE)
