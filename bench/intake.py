"""Intake benchmark: POST /api/v1/tickets at 50 concurrent clients against uvicorn started as
`make run` starts it, beside a bare Django view doing the same insert and enqueue (the floor) in
the same run and on the same server.

    .venv/bin/python bench/intake.py [--clients 50] [--seconds 15] [--rounds 2]

The stack (bench/stack.py: private Postgres + pgvector and Redis, migrated and seeded like
`make run`) runs uvicorn with bench/intake_settings.py, whose URL conf (this module, imported by
the server) is Ledgerly's plus `POST /bench/floor/tickets`: a plain Django view that reads the
JSON body, finds the customer and calls `support.services.ticket_submit` (the same insert and
the same enqueue), with no authentication, validation or rate limiting. No Celery worker runs:
what is measured is intake, the queued runs wait in Redis. Rate limits are set out of reach.

Each client keeps one HTTP/1.1 connection and sends its next request when the last is answered.
API and floor alternate in rounds (API, floor, API, floor...) so a change in the machine's load
affects both. p50/p95 are of the API's requests; rps is API requests per second of API phase,
floor_rps the same for the floor; ratio = rps / floor_rps. Targets: p95 <= 25 ms, ratio >= 0.7.
Ends with one JSON line: {"bench": "intake", "p50_ms", "p95_ms", "rps", "floor_rps", "ratio"}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

if __name__ != "__main__":
    # Imported by the server as its ROOT_URLCONF (bench/intake_settings.py).
    from django.http import HttpRequest, JsonResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from billing.models import Customer
    from ledgerly.urls import urlpatterns as ledgerly_urlpatterns
    from support import services

    @csrf_exempt
    def floor_ticket_create(request: HttpRequest) -> JsonResponse:
        body = json.loads(request.body)
        customer = Customer.objects.get(pk=body["customer_id"])
        ticket = services.ticket_submit(customer=customer, text=body["text"])
        return JsonResponse({"id": ticket.pk, "state": ticket.state}, status=202)

    urlpatterns = [
        *ledgerly_urlpatterns,
        path("bench/floor/tickets", floor_ticket_create),
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _phase(
    *, port: int, clients: int, seconds: float, request_for: Any
) -> tuple[list[float], int, float, int]:
    """`clients` threads, each on one keep-alive connection, for `seconds`. Returns latencies
    (ms), requests answered 202, wall seconds, and errors."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            path, body, headers = request_for(i, n)
            n += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status == 202:
                latencies[i].append(elapsed)
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + seconds
    start.wait()
    for t in threads:
        t.join(timeout=seconds + 60)
    wall = time.perf_counter() - t_start
    flat = [x for per in latencies for x in per]
    return flat, len(flat), wall, sum(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from stack import Options, Stack, say  # bench/ is the script's own directory

    class IntakeStack(Stack):
        def start_web(self) -> None:
            # The web server exactly as `make run` starts it (ledgerly/devstack.py).
            self.web = self._spawn(
                "web",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "ledgerly.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.web_port),
                ],
                self.env(),
            )
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if self.web.poll() is not None:
                    raise RuntimeError(f"web exited: {self.log_tail('web')}")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=2)
                    conn.request("GET", "/healthz")
                    conn.getresponse().read()
                    return
                except OSError:
                    time.sleep(0.2)
            raise RuntimeError("web did not answer /healthz in 90 s")

    options = Options(
        workers=0,
        env={
            "DJANGO_SETTINGS_MODULE": "bench.intake_settings",
            "API_RATE_LIMIT_PER_KEY_PER_MINUTE": "100000000",
            "API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE": "100000000",
        },
    )
    with IntakeStack(options) as stack:
        from django.contrib.auth.models import User

        from billing.models import Customer
        from support.apikeys import api_key_create

        owner = User.objects.get(username="staff")
        customers = list(Customer.objects.order_by("pk")[:20])
        keys = [
            api_key_create(
                name="bench intake", scopes=["tickets"], owner=owner, customer=c
            ).plaintext
            for c in customers
        ]
        say(f"{len(keys)} customer-bound keys; {args.clients} clients")

        def api_request(i: int, n: int) -> tuple[str, bytes, dict[str, str]]:
            body = json.dumps({"text": f"Where can I download invoice {i}-{n} as a PDF?"})
            return (
                "/api/v1/tickets",
                body.encode(),
                {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {keys[i % len(keys)]}",
                },
            )

        def floor_request(i: int, n: int) -> tuple[str, bytes, dict[str, str]]:
            body = json.dumps(
                {
                    "customer_id": customers[i % len(customers)].pk,
                    "text": f"Where can I download invoice {i}-{n} as a PDF?",
                }
            )
            return "/bench/floor/tickets", body.encode(), {"Content-Type": "application/json"}

        port = stack.web_port
        for name, request_for in (("api", api_request), ("floor", floor_request)):
            _, done, _, errors = _phase(
                port=port, clients=args.clients, seconds=args.warmup, request_for=request_for
            )
            say(f"warm-up {name}: {done} requests, {errors} errors")

        api_lat: list[float] = []
        api_n, api_wall, floor_n, floor_wall, api_err, floor_err = 0, 0.0, 0, 0.0, 0, 0
        for r in range(args.rounds):
            lat, n, wall, err = _phase(
                port=port, clients=args.clients, seconds=args.seconds, request_for=api_request
            )
            api_lat += lat
            api_n, api_wall, api_err = api_n + n, api_wall + wall, api_err + err
            say(f"round {r + 1} api: {n / wall:.0f} rps, p95 {_percentile(lat, 0.95):.1f} ms")
            lat, n, wall, err = _phase(
                port=port, clients=args.clients, seconds=args.seconds, request_for=floor_request
            )
            floor_n, floor_wall, floor_err = floor_n + n, floor_wall + wall, floor_err + err
            say(f"round {r + 1} floor: {n / wall:.0f} rps, p95 {_percentile(lat, 0.95):.1f} ms")

        from ledgerly.llm.redis_state import client as redis_client
        from support.models import Ticket

        tickets = Ticket.objects.count()
        load = stack_load()
        rps = api_n / api_wall
        floor_rps = floor_n / floor_wall
        print(
            f"api: {api_n} tickets in {api_wall:.1f} s ({api_err} errors); "
            f"floor: {floor_n} in {floor_wall:.1f} s ({floor_err} errors); "
            f"{tickets} tickets stored; load average {load}; "
            f"redis keys {redis_client().dbsize()}",
            file=sys.stderr,
        )
        result = {
            "bench": "intake",
            "p50_ms": round(statistics.median(api_lat), 1),
            "p95_ms": round(_percentile(api_lat, 0.95), 1),
            "rps": round(rps, 1),
            "floor_rps": round(floor_rps, 1),
            "ratio": round(rps / floor_rps, 3),
        }
    print(json.dumps(result))
    return 0


def stack_load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
