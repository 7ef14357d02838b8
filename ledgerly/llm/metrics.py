"""Prometheus metrics of the model gateway (exported by the process's /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("ledgerly_llm_calls_total", "Gateway call steps", ["tier", "model", "outcome"])
COST = Counter("ledgerly_llm_cost_usd_total", "Dollars spent on model calls", ["model"])
TOKENS = Counter("ledgerly_llm_tokens_total", "Tokens used", ["model", "kind"])
LATENCY = Histogram(
    "ledgerly_llm_latency_seconds",
    "Latency of model calls (incl. SDK retries)",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
BUDGET_USED = Gauge(
    "ledgerly_llm_global_budget_used_ratio",
    "Largest fraction of the global day/month LLM budget committed, as last seen by this process",
)
BUDGET_THRESHOLD = Counter(
    "ledgerly_llm_budget_threshold_total",
    "Calls made while global LLM spend was past a threshold",
    ["level"],  # warn (80%), downgrade (95%), exhausted (100%)
)
BREAKER_OPENED = Counter("ledgerly_llm_breaker_opened_total", "Circuit breaker trips", ["model"])
SIMULATED = Gauge("ledgerly_llm_simulated", "1 when the simulator, not Claude, answers")
