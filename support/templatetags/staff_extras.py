"""Template helpers of the staff pages: percentages, dollar amounts, dictionary look-ups."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import template

from support.views.charts import percent

register = template.Library()


@register.filter
def pct(value: float | None) -> str:
    return percent(value)


@register.filter
def get(mapping: dict[str, Any], key: str) -> Any:
    return mapping.get(key, "") if isinstance(mapping, dict) else ""


@register.filter
def isotime(value: str | None) -> str:
    """An ISO 8601 timestamp from frozen JSON facts as "2026-11-28 09:02 UTC"."""
    if not value:
        return ""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@register.simple_tag
def usd(value: Decimal | None) -> str:
    """Dollars: to the cent from $1, to a hundredth of a cent below (model calls are cheap)."""
    if value is None:
        return "n/a"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.4f}"
