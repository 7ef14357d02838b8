"""Message Batches: create, retrieve, list, cancel, delete and JSONL results.

A batch is processed in one go once `batch_delay_s` (LLM_SIMULATOR_BATCH_DELAY_S) has passed
since it was created (0 = at creation); until then it is `in_progress`. Each request runs through
the same validation and behaviour as POST /v1/messages, with `usage.service_tier == "batch"`;
an invalid request becomes an `errored` result, as in the API.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import SimulatedAPIError, invalid

if TYPE_CHECKING:
    from .handler import Simulator

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000


def _stamp(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class _Batch:
    id: str
    requests: list[dict[str, Any]]
    created_at: dt.datetime
    ready_at: float
    results: list[dict[str, Any]] = field(default_factory=list)
    status: str = "in_progress"
    ended_at: dt.datetime | None = None
    cancel_initiated_at: dt.datetime | None = None

    def counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.status != "ended":
            counts["processing"] = len(self.requests)
            return counts
        for result in self.results:
            counts[result["result"]["type"]] += 1
        return counts


class BatchStore:
    def __init__(self, simulator: Simulator) -> None:
        self._simulator = simulator
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}

    def route(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        query: Mapping[str, str],
        base_url: str,
    ) -> tuple[int, dict[str, Any] | bytes]:
        parts = path.split("/")[4:]  # after /v1/messages/batches
        if method == "POST" and not parts:
            return 200, self._view(self.create(body), base_url)
        if method == "GET" and not parts:
            return 200, self.list(query, base_url)
        if not parts:
            raise SimulatedAPIError("not_found_error", f"Not found: {method} {path}")
        batch = self._get(parts[0])
        if method == "GET" and len(parts) == 1:
            return 200, self._view(batch, base_url)
        if method == "POST" and parts[1:] == ["cancel"]:
            return 200, self._view(self.cancel(batch), base_url)
        if method == "GET" and parts[1:] == ["results"]:
            return 200, self.results(batch)
        if method == "DELETE" and len(parts) == 1:
            self._advance(batch)
            if batch.status != "ended":
                raise invalid(
                    f"Batch {batch.id} cannot be deleted while it is {batch.status}; "
                    "cancel it first."
                )
            with self._lock:
                self._batches.pop(batch.id, None)
            return 200, {"id": batch.id, "type": "message_batch_deleted"}
        raise SimulatedAPIError("not_found_error", f"Not found: {method} {path}")

    def create(self, body: dict[str, Any]) -> _Batch:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise invalid("requests: List should have at least 1 item")
        if len(requests) > MAX_REQUESTS:
            raise invalid(f"requests: a batch holds at most {MAX_REQUESTS} requests")
        seen: set[str] = set()
        for i, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise invalid(
                    f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if custom_id in seen:
                raise invalid(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            if not isinstance(request.get("params"), dict):
                raise invalid(f"requests.{i}.params: Field required")
        batch = _Batch(
            id="msgbatch_sim_" + uuid.uuid4().hex[:24],
            requests=requests,
            created_at=dt.datetime.now(dt.UTC),
            ready_at=self._simulator.config.clock() + self._simulator.config.batch_delay_s,
        )
        with self._lock:
            self._batches[batch.id] = batch
        self._advance(batch)
        return batch

    def cancel(self, batch: _Batch) -> _Batch:
        self._advance(batch)
        with self._lock:
            if batch.status == "in_progress":
                batch.status = "canceling"
                batch.cancel_initiated_at = dt.datetime.now(dt.UTC)
        return batch

    def results(self, batch: _Batch) -> bytes:
        self._advance(batch)
        if batch.status != "ended":
            raise invalid(f"Batch {batch.id} has not finished processing ({batch.status}).")
        return b"".join(json.dumps(r).encode() + b"\n" for r in batch.results)

    def list(self, query: Mapping[str, str], base_url: str) -> dict[str, Any]:
        limit = int(query.get("limit", 20))
        with self._lock:
            ordered = sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)
        ids = [b.id for b in ordered]
        if "after_id" in query and query["after_id"] in ids:
            ordered = ordered[ids.index(query["after_id"]) + 1 :]
        elif "before_id" in query and query["before_id"] in ids:
            ordered = ordered[: ids.index(query["before_id"])][-limit:]
        page = ordered[:limit]
        for batch in page:
            self._advance(batch)
        return {
            "data": [self._view(b, base_url) for b in page],
            "has_more": len(ordered) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    def _get(self, batch_id: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise SimulatedAPIError("not_found_error", f"message_batch: {batch_id} not found")
        self._advance(batch)
        return batch

    def _advance(self, batch: _Batch) -> None:
        """Finish the batch if its time has come (or end it as canceled)."""
        with self._lock:
            if batch.status == "ended":
                return
            if batch.status == "canceling":
                batch.results = [
                    {"custom_id": r["custom_id"], "result": {"type": "canceled"}}
                    for r in batch.requests
                ]
            elif self._simulator.config.clock() >= batch.ready_at:
                batch.results = [self._run(r) for r in batch.requests]
            else:
                return
            batch.status = "ended"
            batch.ended_at = dt.datetime.now(dt.UTC)

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        params = request["params"]
        try:
            if params.get("stream"):
                raise invalid("stream: streaming is not supported in Message Batches")
            message, _ = self._simulator.create_message(
                params,
                adversarial=self._simulator.config.mode == "adversarial",
                service_tier="batch",
            )
        except SimulatedAPIError as exc:
            return {
                "custom_id": request["custom_id"],
                "result": {"type": "errored", "error": exc.body("req_sim_batch")},
            }
        return {
            "custom_id": request["custom_id"],
            "result": {"type": "succeeded", "message": message},
        }

    def _view(self, batch: _Batch, base_url: str) -> dict[str, Any]:
        ended = batch.status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": batch.counts(),
            "created_at": _stamp(batch.created_at),
            "expires_at": _stamp(batch.created_at + dt.timedelta(hours=24)),
            "ended_at": _stamp(batch.ended_at) if batch.ended_at else None,
            "archived_at": None,
            "cancel_initiated_at": (
                _stamp(batch.cancel_initiated_at) if batch.cancel_initiated_at else None
            ),
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }
