"""The deployment files are checked offline: no Docker engine runs here, but Debian's
docker-compose validates and renders the compose file without one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ["migrate", "web", "worker", "beat"]


def _compose_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "POSTGRES_", "WORKER_", "WEB_", "REDIS_", "LLM_"))
    }
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REQUIRED = {"DJANGO_SECRET_KEY": "a-test-secret", "POSTGRES_PASSWORD": "a-test-password"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    result = _compose_config(**REQUIRED)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(rendered) -> dict[str, Any]:
    return rendered["services"]


def test_compose_file_validates():
    result = _compose_config("-q", **REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_required_secret(missing):
    result = _compose_config("-q", **{k: v for k, v in REQUIRED.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr


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
    assert "a-test-password" in spec["environment"]["DATABASE_URL"]


def test_the_compose_file_holds_no_secret_value():
    # Every secret-like setting is interpolated from the environment, with no default.
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {**raw["x-app"]["environment"], **raw["services"]["db"]["environment"]}
    secret_like = {k: v for k, v in env.items() if re.search(r"SECRET|PASSWORD|API_KEY|DSN", k)}

    assert set(secret_like) >= {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "ANTHROPIC_API_KEY"}
    for name, value in secret_like.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*|:-)\}", value), (name, value)
    assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]


@pytest.mark.parametrize("service", ["db", "redis"])
def test_postgres_and_redis_sit_only_on_the_internal_network_unpublished(
    rendered, services, service
):
    assert "ports" not in services[service]
    assert list(services[service]["networks"]) == ["data"]
    assert rendered["networks"]["data"]["internal"] is True


def test_only_the_web_service_is_exposed(services):
    assert sorted(name for name, spec in services.items() if spec.get("ports")) == ["web"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_reach_the_data_network_and_the_outside(rendered, services, service):
    # The model provider is outside: an internal-only network would cut the workers off.
    assert set(services[service]["networks"]) == {"data", "egress"}
    assert not rendered["networks"]["egress"].get("internal", False)


@pytest.mark.parametrize(("setting", "replicas"), [({}, 2), ({"WORKER_REPLICAS": "5"}, 5)])
def test_workers_scale_by_replicas_from_the_environment(setting, replicas):
    result = _compose_config(**REQUIRED, **setting)
    assert result.returncode == 0, result.stderr
    worker = yaml.safe_load(result.stdout)["services"]["worker"]

    assert worker["deploy"]["replicas"] == replicas
    assert "container_name" not in worker  # a fixed name could not be scaled


def test_beat_runs_as_exactly_one_replica(services):
    assert services["beat"]["deploy"]["replicas"] == 1


def test_migrations_load_the_reference_data_the_router_and_faq_need(services):
    command = " ".join(services["migrate"]["command"])

    for step in ("migrate --no-input", "ingest_helpcenter", "seed_router_exemplars"):
        assert f"manage.py {step}" in command


@pytest.mark.parametrize("service", ["web", "worker", "beat"])
def test_app_services_start_after_migrations(services, service):
    assert services[service]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_worker_and_beat_run_celery(services):
    assert "exec celery -A ledgerly worker" in services["worker"]["command"][-1]
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


@pytest.mark.parametrize("service", ["web", "worker", "beat"])
def test_the_rendered_environment_is_a_valid_production_configuration(service):
    result = _compose_config(**REQUIRED, LLM_BACKEND="simulator")
    assert result.returncode == 0, result.stderr
    env = yaml.safe_load(result.stdout)["services"][service]["environment"]
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **{k: str(v) for k, v in env.items()}},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout
