"""What the model gateway adds to a call: N calls through `ledgerly.llm` vs N raw SDK calls.

Both go through the same in-process simulator transport with zero latency, in one run, paired
and interleaved (raw, gateway, raw, gateway...) so machine noise hits both alike. The gateway's
extra work per call: prompt lookup, request building, breaker admission, budget reservation and
settlement, rate limiter take and settle (Redis Lua scripts), validation and the LLMCall insert
(Postgres). Starts a private embedded Postgres and Redis unless
LEDGERLY_BENCH_EXTERNAL_SERVICES=1 (then DATABASE_URL and REDIS_URL are used).

    python bench/gateway_overhead.py [N]      # default N=500
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    from ledgerly import devstack

    if os.environ.get("LEDGERLY_BENCH_EXTERNAL_SERVICES") != "1":
        devstack.use_private_services()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledgerly.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    # The bench sends hundreds of calls a second: limits far above that, so the limiter takes
    # and settles as usual (its cost is measured) but never makes a call wait.
    os.environ.setdefault(
        "LLM_RATE_LIMITS_JSON",
        json.dumps({"haiku": {"rpm": 10**9, "itpm": 10**12, "otpm": 10**12}}),
    )
    os.environ.pop("ANTHROPIC_API_KEY", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    setup_django()
    import anthropic
    import httpx2

    from ledgerly.llm import gateway as gateway_module
    from ledgerly.llm.context import CallContext
    from ledgerly.llm.prompt_registry import get as get_prompt
    from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport

    transport = SimulatorTransport(
        SimulatorConfig(
            latency_median_ms=0,
            requests_per_minute=10**9,
            input_tokens_per_minute=10**12,
            output_tokens_per_minute=10**12,
        )
    )
    gateway = gateway_module.Gateway(inner_transport=transport)
    raw_client = anthropic.Anthropic(
        api_key="sk-sim-bench",
        base_url="https://api.anthropic.com",
        http_client=httpx2.Client(transport=transport),
    )
    messages = [{"role": "user", "content": "How do I download last month's invoice as a PDF?"}]
    body = gateway.build_request(
        prompt=get_prompt("faq_answer"),
        messages=messages,
        max_tokens=200,
        tools=None,
        output_schema=None,
        system_extra=None,
    )
    model = gateway.config.models["small"]

    def raw_call() -> None:
        raw_client.messages.create(model=model, **body)

    def gateway_call(i: int) -> None:
        completion = gateway.complete(
            ctx=CallContext.starting_now(
                run_id=f"bench-{i % 50}",
                ticket_id="",
                customer_ref=f"cus_bench{i % 20}",
                seconds=30,
            ),
            tier="small",
            purpose="bench",
            prompt="faq_answer",
            messages=messages,
            max_tokens=200,
            fallback="none",
        )
        assert completion.model == model
        assert not completion.static

    for i in range(30):  # warm up: connections, scripts loaded, caches
        raw_call()
        gateway_call(i)

    raw_ms: list[float] = []
    gw_ms: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        raw_call()
        raw_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        gateway_call(i)
        gw_ms.append((time.perf_counter() - started) * 1000)

    added = [g - r for g, r in zip(gw_ms, raw_ms, strict=True)]
    median_added = statistics.median(added)
    p95_added = percentile(added, 0.95)
    ratio = statistics.median(gw_ms) / statistics.median(raw_ms)
    print(f"calls: {n} raw + {n} through the gateway (zero-latency simulator transport)")
    print(
        f"raw SDK   median {statistics.median(raw_ms):.3f} ms p95 {percentile(raw_ms, 0.95):.3f} ms"
    )
    print(
        f"gateway   median {statistics.median(gw_ms):.3f} ms p95 {percentile(gw_ms, 0.95):.3f} ms"
    )
    print(f"added     median {median_added:.3f} ms  p95 {p95_added:.3f} ms  ratio {ratio:.2f}")
    print(
        json.dumps(
            {
                "bench": "gateway_overhead",
                "median_added_ms": round(median_added, 3),
                "p95_added_ms": round(p95_added, 3),
                "ratio": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
