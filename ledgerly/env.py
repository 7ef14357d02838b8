"""Reading configuration from the environment, failing loudly on a bad value.

A thin wrapper over `environs` (which does the parsing) so that every bad value stops start-up
with Django's ImproperlyConfigured and a message naming the variable, e.g.
`Environment variable "LLM_DAILY_BUDGET_USD" invalid: Must be greater than 0.`
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from environs import Env, EnvError
from marshmallow.validate import OneOf, Range

_env = Env()


def _read(kind: str, name: str, default: Any, **kwargs: Any) -> Any:
    try:
        return getattr(_env, kind)(name, default, **kwargs)
    except EnvError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def string(name: str, default: str | None = None, *, choices: list[str] | None = None) -> str:
    validate = OneOf(choices) if choices else None
    value = _read("str", name, default, validate=validate)
    if not value and default is None:
        raise ImproperlyConfigured(f'Environment variable "{name}" is required and not set.')
    return str(value)


def optional_string(name: str) -> str | None:
    value = _read("str", name, None)
    return value or None


def boolean(name: str, default: bool) -> bool:
    return bool(_read("bool", name, default))


def integer(name: str, default: int, *, minimum: int | None = None) -> int:
    validate = Range(min=minimum) if minimum is not None else None
    return int(_read("int", name, default, validate=validate))


def decimal(name: str, default: str, *, minimum: str = "0", positive: bool = False) -> Decimal:
    validate = Range(min=Decimal(minimum), min_inclusive=not positive)
    return Decimal(_read("decimal", name, Decimal(default), validate=validate))


def floating(name: str, default: float, *, minimum: float = 0.0) -> float:
    return float(_read("float", name, default, validate=Range(min=minimum)))


def string_list(name: str, default: list[str]) -> list[str]:
    return list(_read("list", name, default))


def database(name: str, default: str) -> dict[str, Any]:
    url = _read("str", name, default)
    if not url.startswith(("postgres://", "postgresql://")):
        raise ImproperlyConfigured(
            f'Environment variable "{name}" invalid: expected a postgresql:// URL, got {url!r}.'
        )
    config = dict(_read("dj_db_url", name, default))
    # dj-database-url puts a unix-socket directory (`?host=/path`) in OPTIONS; Django reads it
    # from HOST, where readiness checks and tests can see and replace it.
    socket_dir = config.get("OPTIONS", {}).pop("host", None)
    if socket_dir:
        config["HOST"] = socket_dir
    return config


def redis_url(name: str, default: str) -> str:
    url = string(name, default)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f'Environment variable "{name}" invalid: expected a redis:// URL, got {url!r}.'
        )
    return url
