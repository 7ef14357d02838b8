"""API keys for the REST API: create, rotate, revoke, authenticate.

A key is `<prefix>.<secret>`: the prefix (12 hex characters) finds the row and is what lists and
the audit trail show; the secret (32 random bytes, URL-safe base64) is shown once and stored only
as HMAC-SHA256 keyed with a key derived from SECRET_KEY.

Why a fast keyed hash and not scrypt/argon2: those are for low-entropy passwords, where each
guess must be made expensive. A 256-bit random secret cannot be guessed whatever the hash costs,
so a slow hash would only add tens of milliseconds and a CPU burst to every API request (and
hand an attacker a cheap way to load the server). The HMAC key means a leaked database alone
cannot even confirm a candidate key. Comparison is constant-time (`hmac.compare_digest`).
Changing SECRET_KEY invalidates every API key (rotate them all then).

Rotation issues a new key with the same name, scopes, owner and customer, and leaves the old one
valid until now + API_KEY_ROTATION_GRACE_SECONDS (its `expires_at`), so integrations can switch
without downtime. Revocation is immediate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Customer
from support.models import ApiKey, ApiScope, Ticket

PREFIX_BYTES = 6  # 12 hex characters
SECRET_BYTES = 32
# last_used_at is written at most this often per key (not a write on every request).
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
MAX_LINEAGE = 100
_PREFIX = re.compile(rf"[0-9a-f]{{{2 * PREFIX_BYTES}}}")


class ApiKeyError(ValueError):
    """The key cannot be created or changed as asked (bad scope, revoked, already rotated)."""


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: the row, and the plaintext, which exists only here."""

    api_key: ApiKey
    plaintext: str


def _hash_secret(secret: str) -> str:
    hmac_key = hashlib.sha256(b"ledgerly.api-key:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(hmac_key, secret.encode(), hashlib.sha256).hexdigest()


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ApiScope.values))
    if not scopes or unknown:
        raise ApiKeyError(
            f"scopes must be some of {', '.join(ApiScope.values)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return sorted(set(scopes))


def _new_key(**fields: object) -> IssuedKey:
    for _ in range(5):
        prefix = secrets.token_hex(PREFIX_BYTES)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    secret = secrets.token_urlsafe(SECRET_BYTES)
    api_key = ApiKey.objects.create(prefix=prefix, key_hash=_hash_secret(secret), **fields)
    return IssuedKey(api_key=api_key, plaintext=f"{prefix}.{secret}")


def api_key_create(
    *,
    name: str,
    scopes: list[str],
    owner: User,
    customer: Customer | None = None,
    expires_at: dt.datetime | None = None,
) -> IssuedKey:
    """Make a key. `owner` is the person it acts as (a staff key's decisions are theirs);
    `customer` binds it to one customer (it then opens and reads only their tickets); without
    one it is an integration key that must name the customer of each ticket it opens and reads
    only the tickets it opened. The plaintext is returned once and never stored.

    Raises ApiKeyError for an empty name or unknown scopes."""
    cleaned = name.replace("\x00", "").strip()
    if not cleaned or len(cleaned) > 100:
        raise ApiKeyError("a key needs a name of 1 to 100 characters")
    return _new_key(
        name=cleaned,
        scopes=_check_scopes(list(scopes)),
        owner=owner,
        customer=customer,
        expires_at=expires_at,
    )


@transaction.atomic
def api_key_rotate(
    *,
    api_key: ApiKey,
    grace_seconds: int | None = None,
    expires_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> IssuedKey:
    """Replace `api_key` with a new key of the same name, scopes, owner and customer. The old
    key stays valid for the grace period (API_KEY_ROTATION_GRACE_SECONDS unless given), never
    longer than it already was. The new key expires at `expires_at` (None: never).

    Raises ApiKeyError when the key is revoked or was rotated already."""
    now = now or timezone.now()
    grace = settings.API_KEY_ROTATION_GRACE_SECONDS if grace_seconds is None else grace_seconds
    old = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if old.revoked_at is not None:
        raise ApiKeyError(f"key {old.prefix} is revoked")
    if old.replaced_by_id is not None:
        raise ApiKeyError(f"key {old.prefix} was rotated already")
    issued = _new_key(
        name=old.name,
        scopes=old.scopes,
        owner_id=old.owner_id,
        customer_id=old.customer_id,
        expires_at=expires_at,
    )
    until = now + dt.timedelta(seconds=grace)
    if old.expires_at is not None and old.expires_at < until:
        until = old.expires_at
    ApiKey.objects.filter(pk=old.pk).update(replaced_by=issued.api_key, expires_at=until)
    api_key.refresh_from_db()
    return issued


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, now: dt.datetime | None = None) -> bool:
    """Refuse the key from now on, and the keys it replaced (a predecessor still in its rotation
    grace would otherwise keep whoever holds it in). False (nothing changed) when it was revoked
    already."""
    now = now or timezone.now()
    changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
    lineage = api_key_lineage_ids(api_key=api_key)
    older = lineage[: lineage.index(api_key.pk)]
    ApiKey.objects.filter(pk__in=older, revoked_at__isnull=True).update(revoked_at=now)
    api_key.refresh_from_db()
    return changed == 1


def api_key_authenticate(*, token: str, now: dt.datetime | None = None) -> ApiKey | None:
    """The live key `token` (`<prefix>.<secret>`) stands for, or None: malformed, unknown,
    wrong secret, revoked, expired, or owned by a deactivated user. Marks the key used (at most
    once a minute)."""
    prefix, dot, secret = token.partition(".")
    if not dot or not secret or not _PREFIX.fullmatch(prefix) or len(secret) > 100:
        return None  # (a NUL in the prefix would be a 500 from Postgres, not a 401)
    api_key = ApiKey.objects.select_related("owner", "customer").filter(prefix=prefix).first()
    if api_key is None:
        # Spend the same hashing work as for a known prefix.
        hmac.compare_digest(_hash_secret(secret), "0" * 64)
        return None
    if not hmac.compare_digest(_hash_secret(secret), api_key.key_hash):
        return None
    now = now or timezone.now()
    if api_key.revoked_at is not None:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return None
    if not api_key.owner.is_active:
        return None
    if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# --- reads --------------------------------------------------------------------------------------
def api_key_lineage_ids(*, api_key: ApiKey) -> list[int]:
    """The ids of the keys `api_key` replaced and was replaced by (rotation), itself included,
    oldest first. What one of them opened, the others may read."""
    ids = [api_key.pk]
    current: int | None = api_key.pk
    while current is not None and len(ids) < MAX_LINEAGE:
        current = ApiKey.objects.filter(replaced_by_id=current).values_list("pk", flat=True).first()
        if current is not None:
            ids.insert(0, current)
    current = api_key.replaced_by_id
    while current is not None and len(ids) < MAX_LINEAGE:
        ids.append(current)
        current = ApiKey.objects.filter(pk=current).values_list("replaced_by_id", flat=True).first()
    return ids


def tickets_for_api_key(*, api_key: ApiKey) -> QuerySet[Ticket]:
    """The tickets a key may read: all of its customer's when bound to one, else only those it
    (or the keys of its rotation lineage) opened."""
    if api_key.customer_id is not None:
        tickets = Ticket.objects.filter(customer_id=api_key.customer_id)
    else:
        tickets = Ticket.objects.filter(api_key_id__in=api_key_lineage_ids(api_key=api_key))
    return tickets.order_by("-created_at", "-id")


def api_keys_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("owner", "customer").order_by("-created_at", "-id")
