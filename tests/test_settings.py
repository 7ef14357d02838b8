from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **overrides}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REFUND_AUTO_APPROVE_LIMIT", "abc"),
        ("REFUND_AUTO_APPROVE_LIMIT", "-1"),
        ("IDEMPOTENCY_KEY_RETENTION_HOURS", "12"),
        ("DB_POOL_MAX_SIZE", "many"),
        ("DJANGO_DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://localhost/ledgerly"),
        ("REDIS_URL", "localhost:6379"),
        ("LEDGERLY_ENV", "staging"),
    ],
)
def test_malformed_value_stops_startup_naming_the_variable(variable, value):
    result = _check(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f'"{variable}"' in result.stderr


def test_production_requires_a_secret_key():
    result = _check(LEDGERLY_ENV="production", DJANGO_SECRET_KEY="", DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert '"DJANGO_SECRET_KEY"' in result.stderr


def test_production_refuses_demo_signin():
    result = _check(
        LEDGERLY_ENV="production", DJANGO_SECRET_KEY="x" * 50, DEMO_SIGNIN_ENABLED="true"
    )
    assert result.returncode != 0
    assert '"DEMO_SIGNIN_ENABLED"' in result.stderr


def test_defaults_pass_django_checks():
    result = _check()
    assert result.returncode == 0, result.stderr


PRODUCTION = {"LEDGERLY_ENV": "production", "DJANGO_SECRET_KEY": "x" * 50, "DJANGO_DEBUG": "false"}


def test_production_without_a_key_refuses_to_answer_from_the_simulator_by_accident():
    result = _check(**PRODUCTION, ANTHROPIC_API_KEY="", LLM_BACKEND="")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert '"LLM_BACKEND"' in result.stderr


def test_production_may_choose_the_simulator_explicitly():
    result = _check(**PRODUCTION, ANTHROPIC_API_KEY="", LLM_BACKEND="simulator")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("environment", ["development", "production"])
def test_the_anthropic_backend_without_a_key_stops_startup(environment):
    result = _check(
        **{**PRODUCTION, "LEDGERLY_ENV": environment}, ANTHROPIC_API_KEY="", LLM_BACKEND="anthropic"
    )
    assert result.returncode != 0
    assert '"ANTHROPIC_API_KEY"' in result.stderr


def test_an_unknown_backend_stops_startup_naming_the_variable():
    result = _check(LLM_BACKEND="claude")
    assert result.returncode != 0
    assert '"LLM_BACKEND"' in result.stderr


@pytest.mark.parametrize(
    ("overrides", "backend"),
    [
        ({"ANTHROPIC_API_KEY": ""}, "simulator"),
        ({"ANTHROPIC_API_KEY": "sk-ant-not-used"}, "anthropic"),
        ({"ANTHROPIC_API_KEY": "sk-ant-not-used", "LLM_BACKEND": "simulator"}, "simulator"),
    ],
)
def test_outside_production_the_key_decides_unless_the_backend_is_stated(overrides, backend):
    env = {**os.environ, "LLM_BACKEND": "", **overrides}
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from ledgerly.llm.conf import config; print(config().backend)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == backend


def test_docker_compose_states_the_backend_and_needs_a_key_for_claude():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-app"]["environment"]
    # Unset in .env: Claude, so a forgotten key stops start-up instead of serving the simulator.
    assert env["LLM_BACKEND"] == "${LLM_BACKEND:-anthropic}"
    assert env["LEDGERLY_ENV"] == "production"


def test_json_logs_keep_the_extra_fields_of_standard_library_records():
    # billing logs with logger.info(..., extra={...}); those fields must reach the JSON line.
    code = (
        "import logging; logging.getLogger('billing.services').warning("
        "'refund issued', extra={'refund_id': 7, 'amount': '12.00', 'currency': 'EUR'})"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if "refund issued" in line]
    assert len(lines) == 1
    assert {k: lines[0][k] for k in ("event", "refund_id", "amount", "currency", "logger")} == {
        "event": "refund issued",
        "refund_id": 7,
        "amount": "12.00",
        "currency": "EUR",
        "logger": "billing.services",
    }
