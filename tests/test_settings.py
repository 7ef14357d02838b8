from __future__ import annotations

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
