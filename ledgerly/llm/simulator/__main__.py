"""`python -m ledgerly.llm.simulator --port N`: the offline Anthropic API over HTTP.

Point a client at it with base_url http://127.0.0.1:N (any non-empty API key). Settings come
from LLM_SIMULATOR_* variables; flags override them. The demo default latency is a 1.5 s median.
"""

from __future__ import annotations

import argparse
import logging
import os

from .config import MODES, SimulatorConfig
from .handler import Simulator
from .server import serve

DEMO_LATENCY_MEDIAN_MS = 1500.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ledgerly.llm.simulator",
        description="Offline simulator of the Anthropic Messages API (not Claude).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--latency-median-ms",
        type=float,
        default=None,
        help="median latency (default: LLM_SIMULATOR_LATENCY_MEDIAN_MS, else 1500)",
    )
    parser.add_argument("--latency-sigma", type=float, default=None)
    parser.add_argument("--fault-rate", type=float, default=None)
    parser.add_argument("--mode", choices=MODES, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch-delay-s", type=float, default=None)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, object] = {
        key: value
        for key, value in {
            "latency_median_ms": args.latency_median_ms,
            "latency_sigma": args.latency_sigma,
            "fault_rate": args.fault_rate,
            "mode": args.mode,
            "seed": args.seed,
            "batch_delay_s": args.batch_delay_s,
        }.items()
        if value is not None
    }
    if "latency_median_ms" not in overrides and "LLM_SIMULATOR_LATENCY_MEDIAN_MS" not in os.environ:
        overrides["latency_median_ms"] = DEMO_LATENCY_MEDIAN_MS
    serve(Simulator(SimulatorConfig.from_env(**overrides)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
