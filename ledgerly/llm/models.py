from __future__ import annotations

from decimal import Decimal

from django.db import models

from ledgerly.llm.context import LABEL_MAX_LENGTH


class LLMCall(models.Model):
    """One step of one gateway call: a model request (successful or not), a skipped step (breaker
    open, budget refused) or the static answer. Written for every step, so spend and failures
    are on record per ticket, run and customer."""

    class Outcome(models.TextChoices):
        OK = "ok"
        FAILED = "failed"  # retryable errors outlasted the SDK's retries (breaker counts it)
        CIRCUIT_OPEN = "circuit_open"  # skipped: the model's breaker is open
        DEFERRED = "deferred"  # rate limited beyond the wait cap: caller retries later
        BUDGET_EXHAUSTED = "budget_exhausted"
        BAD_REQUEST = "bad_request"  # 4xx other than 429: permanent
        INVALID_OUTPUT = "invalid_output"  # the answer failed validation against its schema
        DEADLINE = "deadline"  # the run's deadline left no time for this step
        STATIC = "static"  # every model step failed: the holding reply, ticket escalates

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ticket_id = models.CharField(max_length=LABEL_MAX_LENGTH, blank=True, default="", db_index=True)
    run_id = models.CharField(max_length=LABEL_MAX_LENGTH, blank=True, default="", db_index=True)
    # The call's CallContext.customer_ref (billing Customer.ref), which keys the customer budget.
    customer_id = models.CharField(
        max_length=LABEL_MAX_LENGTH, blank=True, default="", db_index=True
    )
    purpose = models.CharField(max_length=LABEL_MAX_LENGTH)
    tier = models.CharField(max_length=8)  # the tier the caller asked for
    served_tier = models.CharField(max_length=8, blank=True, default="")  # this step's tier
    model = models.CharField(max_length=100, blank=True, default="")  # exact id, "" if static
    prompt_name = models.CharField(max_length=100)
    prompt_version = models.PositiveIntegerField()
    prompt_hash = models.CharField(max_length=64)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_creation_input_tokens = models.PositiveIntegerField(default=0)
    cache_read_input_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=10, default=Decimal(0))
    latency_ms = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)  # HTTP attempts incl. SDK retries
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    fallback = models.BooleanField(default=False)  # served by a later step than the first
    simulated = models.BooleanField(default=False)  # the simulator answered, not Claude
    batch_id = models.CharField(max_length=100, blank=True, default="")  # Message Batches
    request_id = models.CharField(max_length=100, blank=True, default="")
    stop_reason = models.CharField(max_length=32, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(cost_usd__gte=0), name="llm_call_cost_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.model or 'static'} {self.outcome}"


class LLMBatch(models.Model):
    """One Message Batch: submitted once per `key`, then polled by a beat sweep until it ends.

    A row, not a waiting task: a batch may take up to 24 hours, far past the broker's visibility
    timeout, and a redelivered task must never submit (and pay for) it twice. The worst case of
    the whole batch is reserved against the budgets at submission (`reservation`) and settled to
    the real cost when its results are recorded (one LLMCall per request, with `batch_id`)."""

    class State(models.TextChoices):
        SUBMITTING = "submitting"  # row taken, provider not yet (or not known to be) called
        PROCESSING = "processing"  # the provider has it; polled at next_poll_at
        ENDED = "ended"  # results recorded, reservation settled
        FAILED = "failed"  # the provider refused it; nothing was submitted

    key = models.CharField(max_length=200, unique=True)  # the caller's idempotency key
    state = models.CharField(max_length=12, choices=State.choices, default=State.SUBMITTING)
    provider_batch_id = models.CharField(max_length=100, blank=True, default="")
    run_id = models.CharField(max_length=LABEL_MAX_LENGTH)
    ticket_id = models.CharField(max_length=LABEL_MAX_LENGTH, blank=True, default="")
    customer_ref = models.CharField(max_length=LABEL_MAX_LENGTH)
    # When to stop waiting: the batch is then cancelled (what it processed is still recorded).
    deadline_at = models.DateTimeField()
    poll_every_seconds = models.FloatField(default=30.0)
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    requests = models.JSONField(default=list)  # what recording each result needs, in order
    reservation = models.JSONField(null=True, blank=True)  # the budget reservation to settle
    results = models.JSONField(default=list)  # BatchResult fields, in the requests' order
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_poll_at"], name="llm_batch_due")]

    def __str__(self) -> str:
        return f"batch {self.key} {self.state}"
