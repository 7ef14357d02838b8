"""Who is calling the REST API, with which scope, and how often.

Two ways in, both declared per route with the scope it needs (`scoped("tickets")`,
`scoped("staff")`); the API's default (`DenyAll`) refuses whatever forgot to declare one:

- `Authorization: Bearer <prefix>.<secret>`: an API key (support.apikeys) holding the scope.
  A bad or dead key is a 401 at once (no fall-through to the session); a good key without the
  scope is a 403. A `staff` key acts as its owner, who must still be active staff.
- The Django session, for the pages' own calls, with Django's CSRF check on unsafe methods. A
  signed-in customer may use the `tickets` routes (for their own tickets); a signed-in staff
  member the `staff` routes.

Rate limits: a token bucket per key and one per customer (whoever speaks for them), in Redis,
refilled continuously; one Lua script takes from both atomically on Redis' clock so every web
process agrees. Over the limit: 429 with Retry-After. Redis down: the limit is not enforced
(logged), the request is served.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, Throttled
from ninja.security import APIKeyCookie, HttpBearer
from ninja.throttling import BaseThrottle
from ninja.utils import check_csrf

from billing.models import Customer
from ledgerly.llm import redis_state
from support.apikeys import api_key_authenticate
from support.models import ApiKey, ApiScope

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Principal:
    """The caller of one request. `customer`: who a bound key or a signed-in customer speaks
    for (None for an integration key or staff); `api_key`: None for a session."""

    user: User
    scope: str
    api_key: ApiKey | None = None
    customer: Customer | None = None

    @property
    def via(self) -> str:
        if self.api_key is not None:
            return f"api_key:{self.api_key.prefix}"
        return "api_session"

    def __bool__(self) -> bool:  # ninja treats a falsy auth result as "not authenticated"
        return True


def principal(request: HttpRequest) -> Principal:
    auth = getattr(request, "auth", None)
    if not isinstance(auth, Principal):  # pragma: no cover - every route declares its auth
        raise AuthenticationError()
    return auth


class DenyAll:
    """The API's default authentication: a route that declares no scope is refused (401).
    Not an AuthBase, so it adds no security scheme to the OpenAPI schema."""

    def __call__(self, request: HttpRequest) -> None:
        return None


def _staff_ok(user: User) -> bool:
    return bool(user.is_active and user.is_staff)


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <prefix>.<secret>` holding `scope`."""

    openapi_bearerFormat = "<prefix>.<secret>"
    scheme_name = "ApiKey"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def __call__(self, request: HttpRequest) -> Principal | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(401, "use Authorization: Bearer <prefix>.<secret>")
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> Principal:
        api_key = api_key_authenticate(token=token)
        if api_key is None:
            raise AuthenticationError(401, "the API key is unknown, revoked or expired")
        if self.scope not in api_key.scopes:
            raise AuthorizationError(403, f"this key does not have the {self.scope!r} scope")
        if self.scope == ApiScope.STAFF and not _staff_ok(api_key.owner):
            raise AuthorizationError(403, "the key's owner is no longer staff")
        customer = api_key.customer if self.scope == ApiScope.TICKETS else None
        return Principal(user=api_key.owner, scope=self.scope, api_key=api_key, customer=customer)


_SESSION_KEY = re.compile(r"[a-z0-9]{8,64}")


class SessionScopeAuth(APIKeyCookie):
    """The Django session (cookie), CSRF-checked on unsafe methods, for `scope`."""

    param_name = settings.SESSION_COOKIE_NAME
    scheme_name = "Session"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__(csrf=True)

    def __call__(self, request: HttpRequest) -> Principal | None:
        cookie = request.COOKIES.get(self.param_name)
        if cookie is None or not _SESSION_KEY.fullmatch(cookie):
            # No session, or not one Django could have issued (looking it up would send a NUL
            # or the like to Postgres).
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None  # nobody signed in: 401 (a CSRF failure would wrongly say 403)
        if check_csrf(request):
            raise HttpError(403, "CSRF check Failed")
        return self.authenticate(request, request.COOKIES.get(self.param_name))

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal:
        user: User = request.user  # type: ignore[assignment]
        if self.scope == ApiScope.STAFF:
            if not _staff_ok(user):
                raise AuthorizationError(403, "staff only")
            return Principal(user=user, scope=self.scope)
        customer = Customer.objects.filter(user=user).first()
        if customer is None:
            raise AuthorizationError(403, "this sign-in does not speak for a customer")
        return Principal(user=user, scope=self.scope, customer=customer)


def scoped(scope: str) -> list[Any]:
    """The `auth=` of a route that needs `scope`: an API key holding it, or the session."""
    if scope not in ApiScope.values:
        raise ValueError(f"unknown scope {scope!r}")
    return [ApiKeyAuth(scope), SessionScopeAuth(scope)]


# --- rate limits ----------------------------------------------------------------------------------
# KEYS: bucket hashes. ARGV: per bucket its limit per minute. Every bucket holds one minute's
# worth and refills at limit/60 per second. Takes one token from every bucket, or from none and
# returns the milliseconds until all would have one.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local levels, wait = {}, 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[i])
  local rate = limit / 60000.0
  local state = redis.call('HMGET', KEYS[i], 'ts', 'level')
  local last = tonumber(state[1]) or now
  local level = tonumber(state[2]) or limit
  level = math.min(limit, level + math.max(0, now - last) * rate)
  levels[i] = level
  if level < 1 then
    local w = math.ceil((1 - level) / rate)
    if w > wait then wait = w end
  end
end
for i = 1, #KEYS do
  local level = levels[i]
  if wait == 0 then level = level - 1 end
  redis.call('HSET', KEYS[i], 'ts', now, 'level', level)
  redis.call('PEXPIRE', KEYS[i], 120000)
end
return wait
"""


def _prefix() -> str:
    # The environment's Redis key prefix, where settings define one.
    return str(getattr(settings, "REDIS_KEY_PREFIX", "ledgerly"))


def rate_limit_take(*, api_key_id: int | None, customer_id: int | None) -> float:
    """Take one request from the key's and the customer's buckets; 0 when allowed, else the
    seconds to wait. Fails open when Redis is unreachable."""
    keys: list[str] = []
    limits: list[int] = []
    if api_key_id is not None:
        keys.append(f"{_prefix()}:api:rl:key:{api_key_id}")
        limits.append(settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE)
    if customer_id is not None:
        keys.append(f"{_prefix()}:api:rl:customer:{customer_id}")
        limits.append(settings.API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE)
    if not keys:
        return 0.0
    try:
        wait_ms = redis_state.client().eval(_TAKE, len(keys), *keys, *limits)
    except redis.RedisError as exc:
        log.warning("api.rate_limit_unavailable", error=str(exc))
        return 0.0
    return int(wait_ms) / 1000


def rate_limit_customer(*, customer: Customer) -> None:
    """Count one request against a customer an integration key named (the key's own bucket
    was taken by the throttle). Raises Throttled (429) over the limit."""
    wait = rate_limit_take(api_key_id=None, customer_id=customer.pk)
    if wait:
        raise Throttled(wait=math.ceil(wait))


class ApiRateLimit(BaseThrottle):
    """The API-wide throttle: per key (or signed-in user) and per customer spoken for."""

    def __init__(self) -> None:
        # One throttle serves every request; ninja asks wait() right after allow_request() in
        # the same thread, so the wait is kept per thread.
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        who = getattr(request, "auth", None)
        if not isinstance(who, Principal):
            return True
        key_id = who.api_key.pk if who.api_key is not None else None
        customer_id = who.customer.pk if who.customer is not None else None
        self._local.wait = rate_limit_take(api_key_id=key_id, customer_id=customer_id)
        return self._local.wait == 0

    def wait(self) -> float | None:
        return getattr(self._local, "wait", 0.0) or None
