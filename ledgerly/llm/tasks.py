"""The gateway's beat tasks."""

from __future__ import annotations

import structlog
from celery import shared_task

from ledgerly.llm.gateway import get_gateway

log = structlog.get_logger(__name__)


@shared_task(name="ledgerly.llm.tasks.sweep_reservations", ignore_result=True)
def sweep_reservations() -> int:
    """Give back budget reservations open past their hold (LLM_RESERVATION_HOLD_SECONDS): their
    worker died between reserve and settle. Safe to run twice or on two beats at once (each
    reservation is released by one atomic script, at most once)."""
    swept = get_gateway().budgets.sweep()
    if swept.released:
        log.warning("llm.reservations_swept", released=swept.released, micro_usd=swept.micro_usd)
    return swept.released
