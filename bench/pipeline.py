"""What the support pipeline costs and adds, against the large-model-for-everything baseline.

Runs the golden set three times in one process, through support/evaluation.py (the same harness as
`manage.py evaluate`): the pipeline (router, FAQ lane with its semantic cache, refund workflow,
agent), then the baseline (every ticket through the large-model agent lane, no cache: a worker
with SUPPORT_BASELINE=1, so no semantic answer cache, and LLM_PROMPT_CACHING=0), then the same
baseline with prompt caching on, to show how much of the saving prompt caching alone gives.
The simulator answers with latency 0 and prices its usage like the real models, so cost figures
are what Claude would charge for the same tokens.

* cost_per_ticket_usd / baseline_cost_per_ticket_usd: LLMCall cost per ticket; saving is
  1 - pipeline / baseline. cached_baseline_cost_per_ticket_usd and saving_vs_cached_baseline:
  the same against a baseline that does use prompt caching.
* overhead_ms_p50 / _p95: per customer message, the end-to-end time (submit to answered) minus
  the time spent inside its model calls (LLMCall.latency_ms): queueing, routing, retrieval,
  tools, guard and bookkeeping. Pipeline run only.
* model_calls_per_ticket: model requests per ticket in the pipeline run.

Starts a private embedded Postgres and Redis unless LEDGERLY_BENCH_EXTERNAL_SERVICES=1.

    python bench/pipeline.py [GOLDEN ...]      # default tests/golden
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from memory_harness import ROOT, setup_django


def main(argv: list[str]) -> None:
    setup_django(migrate=False)  # the evaluation migrates its own scratch database
    from support import evaluation as ev

    cases = ev.load_cases(argv or [str(ROOT / "tests" / "golden")])
    options = ev.options_from_settings(env={"LLM_SIMULATOR_LATENCY_MEDIAN_MS": "0"})
    with ev.World() as world:
        pipeline = world.run(cases, options=options)
        baseline = world.run(cases, options=replace(options, baseline=True))
        cached = world.run(
            cases,
            options=replace(options, baseline=True, env={**options.env, "LLM_PROMPT_CACHING": "1"}),
        )

    figures = {}
    for name, results in (("pipeline", pipeline), ("baseline", baseline), ("cached", cached)):
        document = ev.report([results])
        figures[name] = document["summary"]
        print(f"--- {name} ---")
        print(ev.format_table(document).split("\n\n", 1)[-1])
    p, b, c = figures["pipeline"], figures["baseline"], figures["cached"]
    saving = 1 - p["cost_usd"] / b["cost_usd"] if b["cost_usd"] else 0.0
    saving_cached = 1 - p["cost_usd"] / c["cost_usd"] if c["cost_usd"] else 0.0
    print(
        f"{len(cases)} tickets: ${p['cost_per_ticket_usd']:.5f}/ticket against "
        f"${b['cost_per_ticket_usd']:.5f} for the baseline (saving {saving:.1%}); overhead "
        f"per message p50 {p['overhead_ms_p50']} ms, p95 {p['overhead_ms_p95']} ms; "
        f"{p['model_calls_per_ticket']} model calls per ticket "
        f"(baseline {b['model_calls_per_ticket']}); pass rate {p['pass_rate']} "
        f"(baseline {b['pass_rate']})"
    )
    print(
        json.dumps(
            {
                "bench": "pipeline",
                "tickets": len(cases),
                "cost_per_ticket_usd": p["cost_per_ticket_usd"],
                "baseline_cost_per_ticket_usd": b["cost_per_ticket_usd"],
                "saving": round(saving, 4),
                "cached_baseline_cost_per_ticket_usd": c["cost_per_ticket_usd"],
                "saving_vs_cached_baseline": round(saving_cached, 4),
                "pass_rate": p["pass_rate"],
                "baseline_pass_rate": b["pass_rate"],
                "overhead_ms_p50": p["overhead_ms_p50"],
                "overhead_ms_p95": p["overhead_ms_p95"],
                "model_calls_per_ticket": p["model_calls_per_ticket"],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
