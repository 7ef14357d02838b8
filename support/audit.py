"""The staff audit trail: who did what, when, through which page or key.

Call `audit_record` inside the transaction of the action it records, so an action and its entry
commit or roll back together.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from support.models import AuditEntry


def audit_record(
    *,
    actor: User,
    action: str,
    target: str,
    via: str,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Record one staff action. `action` is `<entity>.<verb>` (`refund_request.approve`),
    `target` `<entity>:<id>` (`refund_request:12`), `via` the page path (`page:/staff/...`) or
    the key (`api_key:<prefix>`) it came through."""
    return AuditEntry.objects.create(
        actor=actor, action=action, target=target, via=via[:120], detail=detail or {}
    )
