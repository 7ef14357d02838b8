"""An offline simulator of the Anthropic Messages API (not Claude), deterministic per seed.

Two ways in, one behaviour (`handler.Simulator.handle`):

- `SimulatorTransport(config=None)`: an httpx2 transport (sync and async) to put under the real
  SDK: `anthropic.Anthropic(api_key="sk-sim-...", http_client=httpx2.Client(
  transport=SimulatorTransport()))`. The SDK's retries, timeouts and parsing run unchanged.
- `python -m ledgerly.llm.simulator --port N`: the same API over HTTP (base_url
  http://127.0.0.1:N), real chunked SSE streaming, clean stop on SIGTERM/Ctrl-C.

Endpoints: POST /v1/messages (JSON and SSE), POST /v1/messages/count_tokens, and
/v1/messages/batches (create, list, retrieve, cancel, delete, results as JSONL).

Per-request controls (request headers; the SDK's `extra_headers`):
- `x-sim-fault: <fault>` — one of `faults.FAULTS`: overloaded (529), rate_limited (429 with
  retry-after), spend_limit (429 "workspace spend limit", x-should-retry: false), server_error
  (500), timeout (httpx2.ReadTimeout; the HTTP server stalls past the client's read timeout),
  truncated_stream (connection dropped before message_stop), malformed_tool_input (a tool_use
  whose input breaks its schema), bad_request (400). Without x-sim-fault-times it hits every
  request that carries it (so SDK retries all fail).
- `x-sim-fault-times: N` — the fault hits only the first N attempts with the same
  `x-sim-fault-key` (default key: a hash of fault + body, so SDK retries share it).
- `x-sim-retry-after: S` — retry-after seconds on 429/529 faults (default 2; floats allowed).
- `x-sim-latency-ms: MS` — fixed latency for this request (overrides the distribution).
- `x-sim-mode: competent|adversarial`.
- `x-sim-seed: N` — which sample of the competent model answers (overrides LLM_SIMULATOR_SEED).
  0 is the historic deterministic answer. Any other N varies, deterministically per (N,
  request): the wording of its own prose (greetings, connectives, synonyms, the order of
  independent sentences; never the amounts, ids, dates, numbers or `[slug]` citations in it),
  the order of independent read-only tool calls and whether two go out in one turn, and the
  confidence in structured outputs and tool inputs (±0.1, clamped; the label never changes).
  Streaming or not does not change the sample. The adversarial mode is not varied.
- `x-sim-fault-rate: R` — random transient faults (LLM_SIMULATOR_RANDOM_FAULTS) at rate R in
  [0, 1] for this request (overrides LLM_SIMULATOR_FAULT_RATE). Decided by (seed, request body,
  attempt number): the n-th time the simulator sees the same body under the same seed always
  has the same outcome, and an SDK retry (same body) rolls again, so it can succeed.
Programmatic: `transport.inject(fault, times=1)` queues faults for the next POST /v1/messages
calls on that transport (a request with its own x-sim-fault header does not consume them).

Settings (environment, read by `SimulatorConfig.from_env()`): LLM_SIMULATOR_LATENCY_MEDIAN_MS
(0), LLM_SIMULATOR_LATENCY_SIGMA (0.5), LLM_SIMULATOR_FAULT_RATE (0), LLM_SIMULATOR_RANDOM_FAULTS
(overloaded,rate_limited,server_error), LLM_SIMULATOR_MODE (competent), LLM_SIMULATOR_SEED (0:
no variation; also seeds the latency draws),
LLM_SIMULATOR_RPM (4000), LLM_SIMULATOR_INPUT_TPM (2000000), LLM_SIMULATOR_OUTPUT_TPM (400000),
LLM_SIMULATOR_BATCH_DELAY_S (0).

State (prompt cache, rate-limit buckets, fault counters, batches) lives in one Simulator: one
transport object or one server process.
"""

from .config import SimulatorConfig
from .faults import FAULTS
from .handler import SIMULATOR_HEADER, Simulator
from .transport import SimulatorTransport

__all__ = ["FAULTS", "SIMULATOR_HEADER", "Simulator", "SimulatorConfig", "SimulatorTransport"]
