"""A payment-processor simulator that stands for the outside world.

Its ledger lives in Redis, outside our database and its transactions, shared by every process
(web, workers, test children): a refund it applied stays applied whatever happens to our
transaction or our process afterwards. It honours idempotency keys as Stripe does: the first
call with a key is applied (or declined) atomically and its result recorded under the key; a
later call with the same key and the same parameters gets the recorded result back without a
second refund; the same key with other parameters raises ProcessorIdempotencyMismatch.

Faults are queued in Redis too (`inject(fault, times=...)`), so a test can arm a fault that
hits a call made in another process. Each processor call pops at most one queued fault:

* ``latency``            sleep `seconds` before doing anything, then behave normally;
* ``server_error``       a 5xx before applying (nothing happened; safe to retry);
* ``timeout_after_apply`` apply the refund, then time out (the double-refund trap);
* ``decline``            a permanent decline, recorded under the key like Stripe's 4xx results;
* ``slow_after_apply``   apply the refund, then sleep `seconds` before answering (a window in
                         which a test can kill -9 the caller after the money moved).
"""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from typing import Any, Literal

import redis
from django.conf import settings

from billing.processor import (
    ProcessorDeclined,
    ProcessorIdempotencyMismatch,
    ProcessorRefund,
    ProcessorTimeout,
    ProcessorUnavailable,
)

Fault = Literal["latency", "server_error", "timeout_after_apply", "decline", "slow_after_apply"]
FAULTS: tuple[str, ...] = (
    "latency",
    "server_error",
    "timeout_after_apply",
    "decline",
    "slow_after_apply",
)

# Apply-or-replay in one atomic step: if the key has a record, return it; otherwise store the
# record and, when it is a success, append the refund to the charge's ledger.
_APPLY = """
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
if ARGV[2] == 'succeeded' then
  local record = cjson.decode(ARGV[1])
  redis.call('RPUSH', KEYS[2], cjson.encode(record['refund']))
  redis.call('RPUSH', KEYS[3], cjson.encode(record['refund']))
end
return {1, ARGV[1]}
"""


def _fingerprint(*, charge_ref: str, amount: Decimal, currency: str) -> str:
    raw = json.dumps([charge_ref, str(amount), currency])
    return hashlib.sha256(raw.encode()).hexdigest()


class SimulatedProcessor:
    """The simulator. Cheap to construct; every instance with the same namespace shares state."""

    # Stripe keeps keys 24 hours; the simulator keeps them a week so tests never race expiry.
    KEY_TTL_SECONDS = 7 * 24 * 3600

    def __init__(self, *, redis_url: str | None = None, namespace: str = "ledgerly:processor"):
        self._redis = redis.Redis.from_url(
            redis_url or settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2
        )
        self._ns = namespace
        self._apply = self._redis.register_script(_APPLY)

    # --- the PaymentProcessor protocol ------------------------------------------------------------
    def refund(
        self, *, charge_ref: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> ProcessorRefund:
        fault = self._pop_fault()
        kind = fault["fault"] if fault else None
        if kind == "latency":
            time.sleep(float(fault["seconds"]))  # type: ignore[index]
        if kind == "server_error":
            raise ProcessorUnavailable("simulated 503 before applying")

        fingerprint = _fingerprint(charge_ref=charge_ref, amount=amount, currency=currency)
        outcome = "declined" if kind == "decline" else "succeeded"
        refund = {
            "processor_ref": "re_sim_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20],
            "charge_ref": charge_ref,
            "amount": str(amount),
            "currency": currency,
            "idempotency_key": idempotency_key,
            "applied_at": time.time(),
        }
        record = {"fingerprint": fingerprint, "outcome": outcome, "refund": refund}
        try:
            created, stored = self._apply(
                keys=[
                    self._key("idem", idempotency_key),
                    self._key("charge", charge_ref),
                    self._key("refunds"),
                ],
                args=[json.dumps(record), outcome, self.KEY_TTL_SECONDS],
            )
        except redis.RedisError as exc:
            raise ProcessorUnavailable(f"simulator store unavailable: {exc}") from exc
        recorded = json.loads(stored)
        if recorded["fingerprint"] != fingerprint:
            raise ProcessorIdempotencyMismatch(
                f"idempotency key {idempotency_key!r} was used with other parameters"
            )

        if kind == "timeout_after_apply":
            raise ProcessorTimeout("simulated timeout after applying")
        if kind == "slow_after_apply":
            time.sleep(float(fault["seconds"]))  # type: ignore[index]
        if recorded["outcome"] == "declined":
            raise ProcessorDeclined("simulated decline: the refund was refused", code="declined")
        stored_refund = recorded["refund"]
        return ProcessorRefund(
            processor_ref=stored_refund["processor_ref"],
            charge_ref=stored_refund["charge_ref"],
            amount=Decimal(stored_refund["amount"]),
            currency=stored_refund["currency"],
            idempotency_key=idempotency_key,
            replayed=not created,
        )

    # --- controls and inspection (tests, demos) ---------------------------------------------------
    def inject(self, fault: Fault, *, times: int = 1, seconds: float = 0.0) -> None:
        """Queue `fault` for the next `times` processor calls, in any process."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}")
        entry = json.dumps({"fault": fault, "seconds": seconds})
        self._redis.rpush(self._key("faults"), *([entry] * times))

    def pending_faults(self) -> int:
        return int(self._redis.llen(self._key("faults")))  # type: ignore[arg-type]

    def refunds_for(self, charge_ref: str) -> list[ProcessorRefund]:
        """Refunds the processor has applied to the charge, in order."""
        raw: list[bytes] = self._redis.lrange(self._key("charge", charge_ref), 0, -1)  # type: ignore[assignment]
        return [self._as_refund(json.loads(item)) for item in raw]

    def all_refunds(self) -> list[ProcessorRefund]:
        raw: list[bytes] = self._redis.lrange(self._key("refunds"), 0, -1)  # type: ignore[assignment]
        return [self._as_refund(json.loads(item)) for item in raw]

    def total_refunded(self, charge_ref: str) -> Decimal:
        return sum((r.amount for r in self.refunds_for(charge_ref)), Decimal("0.00"))

    def reset(self) -> None:
        """Forget everything (tests): ledger, recorded keys and queued faults."""
        keys = list(self._redis.scan_iter(match=f"{self._ns}:*", count=500))
        if keys:
            self._redis.delete(*keys)

    def _pop_fault(self) -> dict[str, Any] | None:
        try:
            raw = self._redis.lpop(self._key("faults"))
        except redis.RedisError as exc:
            raise ProcessorUnavailable(f"simulator store unavailable: {exc}") from exc
        return json.loads(raw) if raw else None  # type: ignore[arg-type]

    def _key(self, *parts: str) -> str:
        return ":".join((self._ns, *parts))

    @staticmethod
    def _as_refund(item: dict[str, Any]) -> ProcessorRefund:
        return ProcessorRefund(
            processor_ref=item["processor_ref"],
            charge_ref=item["charge_ref"],
            amount=Decimal(item["amount"]),
            currency=item["currency"],
            idempotency_key=item["idempotency_key"],
        )
