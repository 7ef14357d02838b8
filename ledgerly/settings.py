"""Ledgerly settings: one module, driven by environment variables (see README, "Configuration").

Defaults run the embedded development stack. Production sets LEDGERLY_ENV=production,
DJANGO_SECRET_KEY, DATABASE_URL, REDIS_URL and, for real Claude, ANTHROPIC_API_KEY.
A malformed value stops start-up with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ledgerly import env

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env.string("LEDGERLY_DATA_DIR", str(BASE_DIR / ".data")))

LEDGERLY_ENV = env.string(
    "LEDGERLY_ENV", "development", choices=["development", "test", "production"]
)
PRODUCTION = LEDGERLY_ENV == "production"

DEBUG = env.boolean("DJANGO_DEBUG", LEDGERLY_ENV == "development")
if PRODUCTION:
    SECRET_KEY = env.string("DJANGO_SECRET_KEY")
    if DEBUG:
        raise ImproperlyConfigured('Environment variable "DJANGO_DEBUG" must be off in production.')
else:
    SECRET_KEY = env.string("DJANGO_SECRET_KEY", "dev-only-insecure-key-not-for-production")
ALLOWED_HOSTS = env.string_list(
    "DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env.string_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # HNSW indexes and full-text search
    "ninja",  # serves Swagger UI's assets locally (no CDN offline)
    "billing",
    "memory",
    "support",
    "ledgerly.llm",
]

MIDDLEWARE = [
    # First: the request's trace and request id cover everything after it (ledgerly/tracing.py).
    "ledgerly.observability.TraceMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Database sessions that treat a cookie Django never issued as no session (not a 500).
SESSION_ENGINE = "ledgerly.sessions"

ROOT_URLCONF = "ledgerly.urls"
ASGI_APPLICATION = "ledgerly.asgi.application"
WSGI_APPLICATION = "ledgerly.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ledgerly.context_processors.model_backend",
            ],
        },
    },
]

# --- Database: Postgres with pgvector, through psycopg 3 and Django's connection pool -------------
_embedded_pg = f"postgresql://postgres:@/postgres?host={DATA_DIR / 'pg'}"
DATABASES = {"default": env.database("DATABASE_URL", _embedded_pg)}
DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool owns connection lifetime
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
    "min_size": env.integer("DB_POOL_MIN_SIZE", 1, minimum=0),
    "max_size": env.integer("DB_POOL_MAX_SIZE", 20, minimum=1),
    "timeout": env.integer("DB_POOL_TIMEOUT_SECONDS", 10, minimum=1),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Celery -----------------------------------------------------------------------------
REDIS_URL = env.redis_url("REDIS_URL", "redis://127.0.0.1:16379/0")
# Every key the app writes in Redis (gateway budgets, breaker and rate limits, memory hot state
# and caches, the worker heartbeat, Django's cache) starts with this, so environments sharing a
# Redis never see each other's state. The broker's queues are not prefixed: give each
# environment its own CELERY_BROKER_URL (another database number at least).
REDIS_KEY_PREFIX = env.string("REDIS_KEY_PREFIX", f"ledgerly:{LEDGERLY_ENV}")
if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", REDIS_KEY_PREFIX):
    raise ImproperlyConfigured(
        'Environment variable "REDIS_KEY_PREFIX" invalid: letters, digits and "_.:-" only '
        f"(at most 64; braces would break the gateway's hash slots), got {REDIS_KEY_PREFIX!r}."
    )
CELERY_BROKER_URL = env.redis_url("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task is redelivered when unacked for longer than the visibility timeout, so tasks stay short
# (one bounded step each). Kombu scans for a dead worker's tasks every interval x throttle seconds
# (≈100 s by default); throttle 1 makes the interval the only wait.
CELERY_VISIBILITY_TIMEOUT = env.integer("CELERY_VISIBILITY_TIMEOUT_SECONDS", 300, minimum=10)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "unacked_restore_interval": env.integer(
        "CELERY_UNACKED_RESTORE_INTERVAL_SECONDS", 10, minimum=1
    ),
    "unacked_restore_throttle": 1,
}
CELERY_TIMEZONE = "UTC"
CELERY_IMPORTS = ["ledgerly.tasks"]
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "worker-heartbeat": {"task": "ledgerly.tasks.worker_heartbeat", "schedule": 30},
    "billing-reconcile-refunds": {
        "task": "billing.tasks.reconcile_refunds",
        "schedule": env.integer("REFUND_RECONCILE_EVERY_SECONDS", 60, minimum=5),
    },
    "billing-purge-idempotency-keys": {
        "task": "billing.tasks.purge_idempotency_keys",
        "schedule": 3600,
    },
    "billing-expire-refund-requests": {
        "task": "billing.tasks.expire_refund_requests",
        "schedule": 300,
    },
    "memory-purge-semantic-cache": {"task": "memory.tasks.purge_semantic_cache", "schedule": 3600},
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
    }
}

# --- Auth, i18n, static ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = not PRODUCTION  # no collectstatic needed in development and tests
if PRODUCTION:
    SESSION_COOKIE_SECURE = env.boolean("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Billing: policy numbers that are settings (the rest of POLICY.md is in billing/policy.py)
# Duplicate-charge refunds at or under this amount (in the charge's currency) are approved
# automatically; 0 turns auto-approval off.
REFUND_AUTO_APPROVE_LIMIT = env.decimal("REFUND_AUTO_APPROVE_LIMIT", "25.00")
REFUND_REQUEST_TTL_HOURS = env.integer("REFUND_REQUEST_TTL_HOURS", 72, minimum=1)
# Stripe keeps idempotency keys 24 hours; we keep them at least that long.
IDEMPOTENCY_KEY_RETENTION_HOURS = env.integer("IDEMPOTENCY_KEY_RETENTION_HOURS", 48, minimum=24)
# A refund attempt stuck "in flight" this long is finished by the reconciler.
REFUND_RECONCILE_AFTER_SECONDS = env.integer("REFUND_RECONCILE_AFTER_SECONDS", 30, minimum=1)
PAYMENT_PROCESSOR = env.string("PAYMENT_PROCESSOR", "simulator", choices=["simulator"])
# A refund request's state changes are announced by sending this task (by name: billing imports
# no app that listens); empty turns the announcements off.
BILLING_REFUND_EVENTS_TASK = env.string(
    "BILLING_REFUND_EVENTS_TASK", "support.tasks.refund_request_changed"
)

# --- Support pipeline (support/) ------------------------------------------------------------------
# Caps of one agent run (POLICY of the house, not of the business): turns, tokens, cost, time.
SUPPORT_AGENT_MAX_TURNS = env.integer("SUPPORT_AGENT_MAX_TURNS", 8, minimum=1)
SUPPORT_AGENT_MAX_TOKENS = env.integer("SUPPORT_AGENT_MAX_TOKENS", 60000, minimum=1000)
SUPPORT_AGENT_MAX_COST_USD = env.decimal("SUPPORT_AGENT_MAX_COST_USD", "0.25", positive=True)
SUPPORT_RUN_WALL_SECONDS = env.integer("SUPPORT_RUN_WALL_SECONDS", 120, minimum=5)
# Tool calls in one run above this are an anomaly: the run stops and escalates.
SUPPORT_TOOL_CALL_LIMIT = env.integer("SUPPORT_TOOL_CALL_LIMIT", 20, minimum=1)
# A worker holds a run's step this long; a step found running past it was lost with its worker
# and is taken over (by the redelivered task or by the sweeper, whichever comes first).
SUPPORT_STEP_LEASE_SECONDS = env.integer("SUPPORT_STEP_LEASE_SECONDS", 90, minimum=2)
SUPPORT_SWEEP_EVERY_SECONDS = env.integer("SUPPORT_SWEEP_EVERY_SECONDS", 10, minimum=1)
# Model-unavailable steps are retried this many times (with backoff) before the ticket goes to
# staff; a step that raises unexpectedly this many times becomes a dead letter.
SUPPORT_STEP_RETRIES = env.integer("SUPPORT_STEP_RETRIES", 3, minimum=0)
# Router: nearest labelled exemplars decide when this similar and this much in agreement.
SUPPORT_ROUTER_EXEMPLAR_MIN_SIMILARITY = env.floating(
    "SUPPORT_ROUTER_EXEMPLAR_MIN_SIMILARITY", 0.80
)
SUPPORT_ROUTER_EXEMPLAR_MIN_AGREEMENT = env.floating("SUPPORT_ROUTER_EXEMPLAR_MIN_AGREEMENT", 0.75)
SUPPORT_ROUTER_MODEL_MIN_CONFIDENCE = env.floating("SUPPORT_ROUTER_MODEL_MIN_CONFIDENCE", 0.55)
# Incoming tickets waiting to be routed share one embedding call; the first waits this long.
SUPPORT_ROUTER_BATCH_WAIT_MS = env.integer("SUPPORT_ROUTER_BATCH_WAIT_MS", 10, minimum=0)
# Evaluation baseline: every ticket through the large-model agent, no semantic cache.
SUPPORT_BASELINE = env.boolean("SUPPORT_BASELINE", False)
SUPPORT_SEMANTIC_CACHE = env.boolean("SUPPORT_SEMANTIC_CACHE", not SUPPORT_BASELINE)
# Invoice lookups the agent makes for answering (never for money decisions) are cached briefly.
SUPPORT_LOOKUP_CACHE_SECONDS = env.integer("SUPPORT_LOOKUP_CACHE_SECONDS", 60, minimum=0)
# A conversation quiet this long is read for facts worth remembering (Message Batches).
SUPPORT_CONVERSATION_QUIET_MINUTES = env.integer(
    "SUPPORT_CONVERSATION_QUIET_MINUTES", 30, minimum=1
)
CELERY_BEAT_SCHEDULE["support-sweep-memories"] = {
    "task": "support.tasks.sweep_memories",
    "schedule": 60,
}
CELERY_BEAT_SCHEDULE["support-sweep-runs"] = {
    "task": "support.tasks.sweep_runs",
    "schedule": SUPPORT_SWEEP_EVERY_SECONDS,
}
# Releases (support/releases.py): a shadow candidate also works this share of new tickets; the
# check compares the candidate with the current release over the window, from this many settled
# tickets on, and rolls it back past any threshold.
RELEASE_SHADOW_SAMPLE = env.floating("RELEASE_SHADOW_SAMPLE", 0.10)
RELEASE_WINDOW_MINUTES = env.integer("RELEASE_WINDOW_MINUTES", 60, minimum=1)
RELEASE_MIN_SAMPLE = env.integer("RELEASE_MIN_SAMPLE", 20, minimum=1)
RELEASE_INCOMPLETE_AFTER_SECONDS = env.integer(
    "RELEASE_INCOMPLETE_AFTER_SECONDS", 600, minimum=SUPPORT_RUN_WALL_SECONDS
)
RELEASE_MIN_COMPLETION_RATE = env.floating("RELEASE_MIN_COMPLETION_RATE", 0.85)
RELEASE_MAX_LATENCY_RATIO = env.floating("RELEASE_MAX_LATENCY_RATIO", 2.0, minimum=1.0)
RELEASE_MAX_COST_RATIO = env.floating("RELEASE_MAX_COST_RATIO", 1.5, minimum=1.0)
RELEASE_MAX_ERROR_RATE = env.floating("RELEASE_MAX_ERROR_RATE", 0.05)
for _name in ("RELEASE_SHADOW_SAMPLE", "RELEASE_MIN_COMPLETION_RATE", "RELEASE_MAX_ERROR_RATE"):
    if not 0 <= globals()[_name] <= 1:
        raise ImproperlyConfigured(
            f'Environment variable "{_name}" must be a fraction from 0 to 1, '
            f"got {globals()[_name]}."
        )
RELEASE_CHECK_EVERY_SECONDS = env.integer("RELEASE_CHECK_EVERY_SECONDS", 60, minimum=5)
CELERY_BEAT_SCHEDULE["support-check-releases"] = {
    "task": "support.tasks.check_releases",
    "schedule": RELEASE_CHECK_EVERY_SECONDS,
}

# --- REST API (/api/v1/) --------------------------------------------------------------------------
# A rotated key stays valid this long beside its replacement, then it is refused.
API_KEY_ROTATION_GRACE_SECONDS = env.integer("API_KEY_ROTATION_GRACE_SECONDS", 86400, minimum=0)
# Requests per minute (a token bucket refilled continuously, holding one minute's worth) per API
# key, and per customer whatever key or session speaks for them; over it: 429 with Retry-After.
API_RATE_LIMIT_PER_KEY_PER_MINUTE = env.integer("API_RATE_LIMIT_PER_KEY_PER_MINUTE", 600, minimum=1)
API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE = env.integer(
    "API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE", 120, minimum=1
)
# A ticket's event stream (SSE) ends after this long; the client reconnects with Last-Event-ID.
API_SSE_MAX_SECONDS = env.floating("API_SSE_MAX_SECONDS", 300.0, minimum=0.01)
# Django refuses a request body larger than this (the API answers 413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.integer("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)

# --- Demo -----------------------------------------------------------------------------------------
DEMO_SIGNIN_ENABLED = env.boolean("DEMO_SIGNIN_ENABLED", not PRODUCTION)
if PRODUCTION and DEMO_SIGNIN_ENABLED:
    raise ImproperlyConfigured(
        'Environment variable "DEMO_SIGNIN_ENABLED" must be off in production.'
    )

# --- Email (the chat's magic sign-in links) -------------------------------------------------------
# Development prints mail on the console; production sends through SMTP (set EMAIL_HOST...).
EMAIL_BACKEND = env.string(
    "DJANGO_EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env.string("DJANGO_DEFAULT_FROM_EMAIL", "Ledgerly support <support@localhost>")
EMAIL_HOST = env.string("EMAIL_HOST", "localhost")
EMAIL_PORT = env.integer("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env.string("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.string("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.boolean("EMAIL_USE_TLS", False)

# --- Model gateway (ledgerly/llm) -----------------------------------------------------------------
ANTHROPIC_API_KEY = env.optional_string("ANTHROPIC_API_KEY")
# Who answers model calls: "anthropic" (Claude; needs the key) or "simulator" (the offline
# simulator, not Claude). Unset (None), the key decides: with one Claude answers, without one the
# simulator does, except in production, where a missing key must not quietly put the simulator in
# front of customers: there the choice has to be stated (ledgerly/llm/conf.py resolves it).
LLM_BACKEND: str | None = None
if env.optional_string("LLM_BACKEND") is not None:
    LLM_BACKEND = env.string("LLM_BACKEND", choices=["anthropic", "simulator"])
elif PRODUCTION and not ANTHROPIC_API_KEY:
    raise ImproperlyConfigured(
        'Environment variable "LLM_BACKEND" must be set in production when "ANTHROPIC_API_KEY" '
        'is not: "anthropic" (and set the key) or "simulator" (the offline simulator answers, '
        "not Claude)."
    )
if LLM_BACKEND == "anthropic" and not ANTHROPIC_API_KEY:
    raise ImproperlyConfigured(
        'Environment variable "ANTHROPIC_API_KEY" is required when "LLM_BACKEND" is "anthropic".'
    )
# With the simulator backend, the in-process one answers; this points the gateway at one served
# over HTTP instead (`python -m ledgerly.llm.simulator --port 8090` -> http://127.0.0.1:8090).
LLM_SIMULATOR_URL = env.optional_string("LLM_SIMULATOR_URL")
# Calling code names a tier, never a model; these pin the exact ids (recorded on every call).
# ledgerly/llm/conf.py refuses a retired model at start-up (claude-sonnet-4-5 retires 2026-11-30).
LLM_MODEL_SMALL = env.string("LLM_MODEL_SMALL", "claude-haiku-5-5")
LLM_MODEL_LARGE = env.string("LLM_MODEL_LARGE", "claude-sonnet-5-5")
# Prompt caching (cache_control on the static system prompt and tools); off only to measure
# what it saves (the evaluation's cost baseline).
LLM_PROMPT_CACHING = env.boolean("LLM_PROMPT_CACHING", True)


def _llm_json_object(name: str) -> dict[str, object]:
    import json  # kept local: the only JSON-valued settings are the gateway's

    raw = env.optional_string(name)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ImproperlyConfigured(f'Environment variable "{name}" invalid: {exc}.') from exc
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f'Environment variable "{name}" must be a JSON object.')
    return value


# The one price table: USD per million tokens, by band of prompt length (input + cache-write +
# cache-read tokens); a request is priced wholly at its band. Haiku 5.5 above 100k prompt tokens
# is our assumption (every rate doubled) until the price list says otherwise. LLM_PRICES_JSON
# replaces the bands of the models it names, in the same shape.
LLM_PRICES: dict[str, object] = {
    "claude-haiku-5-5": [
        {"up_to_prompt_tokens": 100_000, "input": "0.10", "output": "0.50",
         "cache_write_5m": "0.125", "cache_read": "0.01"},
        {"up_to_prompt_tokens": None, "input": "0.20", "output": "1.00",
         "cache_write_5m": "0.25", "cache_read": "0.02"},
    ],
    "claude-sonnet-5-5": [
        {"up_to_prompt_tokens": None, "input": "2", "output": "10",
         "cache_write_5m": "2.50", "cache_read": "0.20"},
    ],
}  # fmt: skip
LLM_PRICES.update(_llm_json_object("LLM_PRICES_JSON"))
LLM_BATCH_DISCOUNT = env.decimal("LLM_BATCH_DISCOUNT", "0.50")  # Message Batches: 50% off
# Budgets; the gateway reserves each call's worst case against all of them before calling.
LLM_RUN_BUDGET_TOKENS = env.integer("LLM_RUN_BUDGET_TOKENS", 200_000, minimum=1)
LLM_RUN_BUDGET_USD = env.decimal("LLM_RUN_BUDGET_USD", "1.00", positive=True)
LLM_CUSTOMER_DAILY_BUDGET_USD = env.decimal("LLM_CUSTOMER_DAILY_BUDGET_USD", "5.00", positive=True)
LLM_DAILY_BUDGET_USD = env.decimal("LLM_DAILY_BUDGET_USD", "100.00", positive=True)
LLM_MONTHLY_BUDGET_USD = env.decimal("LLM_MONTHLY_BUDGET_USD", "2000.00", positive=True)
LLM_BUDGET_WARN_FRACTION = env.floating("LLM_BUDGET_WARN_FRACTION", 0.80)
LLM_BUDGET_DOWNGRADE_FRACTION = env.floating("LLM_BUDGET_DOWNGRADE_FRACTION", 0.95)
# Circuit breaker per model, shared through Redis: N failures within the window open it; after
# the cool-down a single probe decides.
LLM_BREAKER_FAILURES = env.integer("LLM_BREAKER_FAILURES", 5, minimum=1)
LLM_BREAKER_WINDOW_SECONDS = env.integer("LLM_BREAKER_WINDOW_SECONDS", 60, minimum=1)
LLM_BREAKER_COOLDOWN_SECONDS = env.integer("LLM_BREAKER_COOLDOWN_SECONDS", 30, minimum=1)
# Shared rate limiter per model family (requests, input and output tokens per minute); the
# bucket holds at most LLM_RATE_LIMIT_BURST_SECONDS worth of each. LLM_RATE_LIMITS_JSON
# replaces the families it names.
LLM_RATE_LIMITS: dict[str, object] = {
    "haiku": {"rpm": 4000, "itpm": 4_000_000, "otpm": 800_000},
    "sonnet": {"rpm": 4000, "itpm": 2_000_000, "otpm": 400_000},
}
LLM_RATE_LIMITS.update(_llm_json_object("LLM_RATE_LIMITS_JSON"))
LLM_RATE_LIMIT_BURST_SECONDS = env.floating("LLM_RATE_LIMIT_BURST_SECONDS", 5.0, minimum=0.1)
# Retries (by the SDK, with backoff and jitter) and waits: a wait longer than the cap is
# handed back to the caller as Defer(seconds) instead of blocking a worker.
LLM_MAX_RETRIES = env.integer("LLM_MAX_RETRIES", 3, minimum=0)
LLM_RETRY_AFTER_CAP_SECONDS = env.floating("LLM_RETRY_AFTER_CAP_SECONDS", 10.0)
LLM_CALL_TIMEOUT_SECONDS = env.floating("LLM_CALL_TIMEOUT_SECONDS", 60.0, minimum=0.1)
# A budget reservation still open this long after it was made belongs to a worker that died
# between reserve and settle: beat's sweep gives it back. It must outlast the longest live call
# (every attempt timing out, each retry waiting the cap), or a live call's room would be freed.
LLM_RESERVATION_HOLD_SECONDS = env.floating("LLM_RESERVATION_HOLD_SECONDS", 900.0, minimum=1.0)
_LONGEST_CALL = (LLM_MAX_RETRIES + 1) * (LLM_CALL_TIMEOUT_SECONDS + LLM_RETRY_AFTER_CAP_SECONDS)
if LLM_RESERVATION_HOLD_SECONDS <= _LONGEST_CALL:
    raise ImproperlyConfigured(
        f'Environment variable "LLM_RESERVATION_HOLD_SECONDS" must exceed the longest call '
        f"((LLM_MAX_RETRIES + 1) x (LLM_CALL_TIMEOUT_SECONDS + LLM_RETRY_AFTER_CAP_SECONDS) = "
        f"{_LONGEST_CALL:g} s), got {LLM_RESERVATION_HOLD_SECONDS:g}."
    )
CELERY_BEAT_SCHEDULE["llm-sweep-reservations"] = {
    "task": "ledgerly.llm.tasks.sweep_reservations",
    "schedule": env.integer("LLM_RESERVATION_SWEEP_EVERY_SECONDS", 60, minimum=1),
}

# --- Memory (help center, customer memory, conversation context, semantic cache) ------------------
# The vector columns are created with EMBEDDING_DIM dimensions: a provider with another dimension
# needs a migration, and the adapter refuses to start when they disagree. "minilm"
# (all-MiniLM-L6-v2, 384-d, numpy) is measured but not the default: held-out recall@3 0.917
# vector / 0.950 hybrid against wordllama's 0.900 / 0.900, but ~250x slower to embed and the
# semantic cache then needs threshold 0.91 for a hit rate of 0.37 (0.52 here). Commit cf83131
# (reverted) switches to it, with migration memory 0005 to 384-d columns.
EMBEDDING_PROVIDER = env.string(
    "EMBEDDING_PROVIDER", "wordllama", choices=["wordllama", "hashing", "minilm"]
)
EMBEDDING_DIM = env.integer("EMBEDDING_DIM", 256, minimum=1)
EMBEDDING_BATCH_SIZE = env.integer("EMBEDDING_BATCH_SIZE", 256, minimum=1)
# HNSW candidate list size per query (pgvector's hnsw.ef_search). bench/vector_search.py, 100k
# chunks: 100 gives recall@5 0.98 at p95 3 ms; 40 only 0.95.
MEMORY_HNSW_EF_SEARCH = env.integer("MEMORY_HNSW_EF_SEARCH", 100, minimum=1)
MEMORY_RETRIEVAL_TOP_K = env.integer("MEMORY_RETRIEVAL_TOP_K", 3, minimum=1)
# "vector" or "hybrid" (vector + Postgres full-text search); bench/retrieval.py measures both.
MEMORY_RETRIEVAL_MODE = env.string("MEMORY_RETRIEVAL_MODE", "vector", choices=["vector", "hybrid"])
# Hot copy of the last turns of each conversation in Redis (rebuilt from Postgres when missing).
CONVERSATION_HOT_TURNS = env.integer("CONVERSATION_HOT_TURNS", 20, minimum=1)
CONVERSATION_HOT_TTL_SECONDS = env.integer("CONVERSATION_HOT_TTL_SECONDS", 86400, minimum=60)
# Context assembly: total token budget, and how many of the latest turns are always verbatim.
CONTEXT_TOKEN_BUDGET = env.integer("CONTEXT_TOKEN_BUDGET", 3000, minimum=200)
CONTEXT_RECENT_TURNS = env.integer("CONTEXT_RECENT_TURNS", 6, minimum=1)
CONTEXT_MEMORIES = env.integer("CONTEXT_MEMORIES", 5, minimum=0)
CONTEXT_PASSAGES = env.integer("CONTEXT_PASSAGES", 3, minimum=0)
# Customer memory recall: score = similarity + weight * 0.5 ** (age_days / half_life_days).
CUSTOMER_MEMORY_RECENCY_WEIGHT = env.floating("CUSTOMER_MEMORY_RECENCY_WEIGHT", 0.1)
CUSTOMER_MEMORY_HALF_LIFE_DAYS = env.floating("CUSTOMER_MEMORY_HALF_LIFE_DAYS", 30.0, minimum=0.1)
# Semantic answer cache for FAQ answers; the threshold (cosine, with the discriminator guard) is
# chosen by bench/semantic_cache.py: 0 false hits on 60 labelled near-misses.
SEMANTIC_CACHE_ENABLED = env.boolean("SEMANTIC_CACHE_ENABLED", True)
SEMANTIC_CACHE_TTL_SECONDS = env.integer("SEMANTIC_CACHE_TTL_SECONDS", 86400, minimum=1)
SEMANTIC_CACHE_THRESHOLD = env.floating("SEMANTIC_CACHE_THRESHOLD", 0.81)

# --- Observability --------------------------------------------------------------------------------
LOG_LEVEL = env.string("LOG_LEVEL", "INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
LOG_FORMAT = env.string(
    "LOG_FORMAT", "json" if PRODUCTION else "console", choices=["json", "console"]
)
SENTRY_DSN = env.optional_string("SENTRY_DSN")
SENTRY_TRACES_SAMPLE_RATE = env.floating("SENTRY_TRACES_SAMPLE_RATE", 0.0)
# OpenTelemetry: spans are exported (OTLP over HTTP) only when an endpoint is set; the exporter
# reads the other standard OTEL_EXPORTER_OTLP_* variables (headers, timeout) itself.
OTEL_EXPORTER_OTLP_ENDPOINT = env.optional_string("OTEL_EXPORTER_OTLP_ENDPOINT")
OTEL_SERVICE_NAME = env.string("OTEL_SERVICE_NAME", "ledgerly")
# /metrics answers only with "Authorization: Bearer <METRICS_TOKEN>" when it is set (Prometheus:
# `authorization: {credentials: ...}` in the scrape config); unset, keep it off the public proxy.
METRICS_TOKEN = env.optional_string("METRICS_TOKEN")
# Prometheus: PROMETHEUS_MULTIPROC_DIR (read by prometheus-client itself, before any metric is
# made) lets /metrics sum every process of a machine; METRICS_PORT serves a worker machine's.
# Made here, before any metric: a missing directory would make every count raise.
PROMETHEUS_MULTIPROC_DIR = env.optional_string("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

from ledgerly.observability import configure_logging, configure_sentry  # noqa: E402
from ledgerly.tracing import configure_tracing  # noqa: E402

LOGGING_CONFIG = None
configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
configure_tracing(service_name=OTEL_SERVICE_NAME, otlp_endpoint=OTEL_EXPORTER_OTLP_ENDPOINT)
configure_sentry(
    dsn=SENTRY_DSN, environment=LEDGERLY_ENV, traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE
)

# --- Evaluation (manage.py evaluate, bench/pipeline.py) -------------------------------------------
# `evaluate` exits non-zero when a figure over the golden set is below its minimum (a fraction).
# A regression gate set a margin under what the pipeline measures with the offline simulator
# (the closing notes give the figures); the aim stays 0.90 and above for every one.
EVAL_MIN_PASS_RATE = env.floating("EVAL_MIN_PASS_RATE", 0.75)
EVAL_MIN_LANE_ACCURACY = env.floating("EVAL_MIN_LANE_ACCURACY", 0.92)
EVAL_MIN_REFUND_ACCURACY = env.floating("EVAL_MIN_REFUND_ACCURACY", 0.88)
EVAL_MIN_ESCALATION_ACCURACY = env.floating("EVAL_MIN_ESCALATION_ACCURACY", 0.93)
# The simulator's random fault rate during evaluation: a model API is not always up.
EVAL_SIMULATOR_FAULT_RATE = env.floating("EVAL_SIMULATOR_FAULT_RATE", 0.03)
EVAL_MESSAGE_TIMEOUT_SECONDS = env.floating("EVAL_MESSAGE_TIMEOUT_SECONDS", 60.0, minimum=1.0)
EVAL_CONCURRENCY = env.integer("EVAL_CONCURRENCY", 4, minimum=1)  # cases played at once
for _name in (
    "EVAL_MIN_PASS_RATE",
    "EVAL_MIN_LANE_ACCURACY",
    "EVAL_MIN_REFUND_ACCURACY",
    "EVAL_MIN_ESCALATION_ACCURACY",
    "EVAL_SIMULATOR_FAULT_RATE",
):
    if not 0 <= globals()[_name] <= 1:
        raise ImproperlyConfigured(
            f'Environment variable "{_name}" must be a fraction between 0 and 1, '
            f"got {globals()[_name]}."
        )
del _name
