"""Prometheus metrics of the model gateway (served by /metrics, see ledgerly/metrics.py).

Calls, tokens, cost and latency are labelled by the model that served, the tier the caller asked
for and the lane of the run that made the call (`lane` is "" outside a support run). Gauges say
how several processes combine (multiprocess mode): the highest budget fraction any process saw,
whether any process is answered by the simulator.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter(
    "ledgerly_llm_calls_total",
    "Gateway call steps by requested tier, served model, outcome and lane",
    ["tier", "model", "outcome", "lane"],
)
COST = Counter(
    "ledgerly_llm_cost_usd_total", "Dollars spent on model calls", ["model", "tier", "lane"]
)
TOKENS = Counter(
    "ledgerly_llm_tokens_total",
    "Tokens used (kind: input, output, cache_write, cache_read)",
    ["model", "tier", "lane", "kind"],
)
LATENCY = Histogram(
    "ledgerly_llm_latency_seconds",
    "Latency of model calls (incl. SDK retries)",
    ["model", "tier", "lane"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
FALLBACKS = Counter(
    "ledgerly_llm_fallbacks_total",
    "Calls served by another tier than asked for, or by the static answer (to=static)",
    ["tier", "to"],
)
PROVIDER_ERRORS = Counter(
    "ledgerly_llm_provider_errors_total",
    "Error answers from the model provider by HTTP status (after the SDK's retries)",
    ["model", "status"],
)
BUDGET_USED = Gauge(
    "ledgerly_llm_global_budget_used_ratio",
    "Largest fraction of the global day/month LLM budget committed, as last seen by a process",
    multiprocess_mode="max",
)
BUDGET_THRESHOLD = Counter(
    "ledgerly_llm_budget_threshold_total",
    "Calls made while global LLM spend was past a threshold",
    ["level"],  # warn (80%), downgrade (95%), exhausted (100%)
)
BREAKER_OPENED = Counter("ledgerly_llm_breaker_opened_total", "Circuit breaker trips", ["model"])
SIMULATED = Gauge(
    "ledgerly_llm_simulated",
    "1 when the simulator, not Claude, answers",
    multiprocess_mode="max",
)
