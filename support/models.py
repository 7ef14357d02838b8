"""Tickets and the runs that work them.

A ticket is one customer's issue in one conversation. Its run is a chain of short steps (one
model call or one tool batch each) with a checkpoint after every step, so any worker can pick it
up where the last one stopped. The step log (`RunStep`) is what makes a step's side effects
happen once: a step is committed together with the checkpoint it produced, under a conditional
update on the run's step counter.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from pgvector.django import HnswIndex, VectorField

from billing.models import Customer, RefundRequest
from memory.models import EMBEDDING_DIM, Conversation


class TicketState(models.TextChoices):
    RECEIVED = "received", "Received"
    ROUTING = "routing", "Routing"
    IN_LANE = "in_lane", "In lane"
    ANSWERED = "answered", "Answered"
    AWAITING_CUSTOMER = "awaiting_customer", "Awaiting the customer"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting staff approval"
    ESCALATED = "escalated", "Escalated to staff"
    FAILED = "failed", "Failed (dead letter)"


# States in which a ticket waits for someone else or is done: its last message has an answer.
SETTLED_STATES = frozenset(
    {
        TicketState.ANSWERED,
        TicketState.AWAITING_CUSTOMER,
        TicketState.AWAITING_APPROVAL,
        TicketState.ESCALATED,
        TicketState.FAILED,
    }
)


class Lane(models.TextChoices):
    FAQ = "faq", "FAQ"
    REFUND = "refund", "Refund workflow"
    AGENT = "agent", "Agent"


class Channel(models.TextChoices):
    CHAT = "chat", "Web chat"
    API = "api", "REST API"


class Ticket(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="tickets")
    conversation = models.ForeignKey(Conversation, on_delete=models.PROTECT, related_name="tickets")
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.API)
    subject = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=20, choices=TicketState.choices)
    lane = models.CharField(max_length=8, choices=Lane.choices, blank=True)
    first_lane = models.CharField(max_length=8, choices=Lane.choices, blank=True)
    route = models.JSONField(default=dict, blank=True, help_text="lane, confidence, tier, reason")
    reply = models.TextField(blank=True, help_text="The last reply the customer saw")
    sources = models.JSONField(default=list, blank=True)
    refund_request = models.ForeignKey(
        RefundRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="tickets"
    )
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # What the first submission under `idempotency_key` said, so the same key with another body
    # is told apart from a retry (a 409, not the old ticket).
    idempotency_fingerprint = models.CharField(max_length=64, blank=True)
    # The API key that opened the ticket (None: the chat or staff). An integration key that is
    # not bound to one customer reads only the tickets it opened.
    api_key = models.ForeignKey(
        "ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="tickets"
    )
    # The Message Batch that extracts what to remember once the conversation has gone quiet.
    memory_batch_key = models.CharField(max_length=200, blank=True)
    memories_saved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "updated_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=TicketState.values), name="ticket_state_valid"
            )
        ]

    def __str__(self) -> str:
        return f"Ticket #{self.pk} ({self.state})"


class RunStatus(models.TextChoices):
    READY = "ready", "Ready for its next step"
    RUNNING = "running", "A worker holds its step"
    WAITING = "waiting", "Waiting (see wake at)"
    IDLE = "idle", "Idle until the customer or staff acts"
    FAILED = "failed", "Failed (dead letter)"


class ReleaseState(models.TextChoices):
    DRAFT = "draft", "Draft (not serving)"
    SHADOW = "shadow", "Shadow (runs beside the current one; output recorded, never sent)"
    CANARY = "canary", "Canary (answers a share of customers)"
    CURRENT = "current", "Current (answers everyone else)"
    RETIRED = "retired", "Retired (was current)"
    ROLLED_BACK = "rolled_back", "Rolled back"


CANDIDATE_STATES = (ReleaseState.SHADOW, ReleaseState.CANARY)


class Release(models.Model):
    """A named set of prompt versions (per prompt name) and model ids (per tier). One is current;
    at most one candidate runs beside it, as a shadow or a canary (support/releases.py). A prompt
    or tier the release does not name is served as configured (the prompt file's version, the
    LLM_MODEL_* setting). Never edited once it has served: a change is a new release."""

    name = models.SlugField(max_length=60, unique=True)
    prompt_versions = models.JSONField(default=dict, blank=True, help_text="{prompt name: version}")
    model_ids = models.JSONField(default=dict, blank=True, help_text="{tier: exact model id}")
    notes = models.TextField(blank=True)
    state = models.CharField(max_length=12, choices=ReleaseState.choices, default="draft")
    # A canary's share of customers (0-1, by a stable hash of the customer ref).
    share = models.DecimalField(max_digits=5, decimal_places=4, default=0)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(max_length=150, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.CharField(max_length=150, blank=True)
    # Who rolled it back ("system" for the automatic check, else the staff member), when, why,
    # and the figures the decision was made on.
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.CharField(max_length=150, blank=True)
    rollback_reason = models.TextField(blank=True)
    rollback_metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="current"), name="release_one_current"
            ),
            # One of each candidate state; that there is one candidate at all is kept by
            # release_start, which starts them one at a time.
            models.UniqueConstraint(
                fields=["state"],
                condition=Q(state__in=["shadow", "canary"]),
                name="release_one_candidate",
            ),
            models.CheckConstraint(
                condition=Q(share__gte=0, share__lte=1), name="release_share_fraction"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class Run(models.Model):
    """The state of a ticket's work. `checkpoint` is everything a worker needs to take the next
    step: the lane's own state, caps consumed, prompt and tool versions, model ids.

    A shadow run (`shadow_of` set, no `ticket` of its own) answers its live run's first message
    under a candidate release: the same steps, but nothing it does reaches the customer or the
    records (support/releases.py)."""

    ticket = models.OneToOneField(
        Ticket, on_delete=models.CASCADE, related_name="run", null=True, blank=True
    )
    shadow_of = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="shadows"
    )
    release = models.ForeignKey(
        Release, on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    # When the run first settled a message (its latency is settled_at - created_at) and how:
    # completed, escalated (by design), capped or error. What the release metrics read.
    settled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, blank=True)
    status = models.CharField(max_length=8, choices=RunStatus.choices, default=RunStatus.READY)
    step = models.PositiveIntegerField(default=0, help_text="Steps committed so far")
    checkpoint = models.JSONField(default=dict)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=100, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True)
    wait_reason = models.CharField(max_length=200, blank=True)
    turns = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "wake_at"]),
            models.Index(fields=["status", "lease_until"]),
            models.Index(fields=["release", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ticket__isnull=False, shadow_of__isnull=True)
                | Q(ticket__isnull=True, shadow_of__isnull=False),
                name="run_live_or_shadow",
            ),
            models.UniqueConstraint(
                fields=["shadow_of", "release"], name="run_one_shadow_per_release"
            ),
        ]

    def __str__(self) -> str:
        kind = f"shadow of run {self.shadow_of_id}" if self.shadow_of_id else "run"
        return f"Run #{self.pk} ({kind}) step {self.step} ({self.status})"


class RunOutcome(models.TextChoices):
    COMPLETED = "completed", "Completed"
    ESCALATED = "escalated", "Escalated by design"
    CAPPED = "capped", "Capped (escalated)"
    ERROR = "error", "Error"


class ShadowOutput(models.Model):
    """What a shadow run would have done for one message: the reply, the escalation it would
    have opened, the writes it tried (each rolled back, with what they would have made) and the
    reply guard's findings. Never sent; staff compare it with what the customer got."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="shadow_outputs")
    live_run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="shadow_outputs")
    message_seq = models.PositiveIntegerField()
    step = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    lane = models.CharField(max_length=8, blank=True)
    next = models.CharField(max_length=20, blank=True)
    reply = models.TextField(blank=True)
    sources = models.JSONField(default=list, blank=True)
    escalation = models.JSONField(default=dict, blank=True)
    dry_runs = models.JSONField(default=list, blank=True)
    guard = models.JSONField(default=list, blank=True)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step"], name="shadow_output_once_per_step")
        ]

    def __str__(self) -> str:
        return f"Shadow output of run {self.run_id} ({self.release_id}) step {self.step}"


class RunStep(models.Model):
    """One committed step: what it did and what it cost. Unique per (run, index)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    detail = models.JSONField(default=dict)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    worker = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="run_step_unique_index")
        ]

    def __str__(self) -> str:
        return f"Run {self.run_id} step {self.index}: {self.kind}"


class EscalationState(models.TextChoices):
    OPEN = "open", "Open"
    CLAIMED = "claimed", "Claimed"
    RESOLVED = "resolved", "Resolved"


class Escalation(models.Model):
    """A ticket handed to staff, with the raw facts (not a persuasive summary)."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="escalations")
    reason = models.CharField(max_length=60, help_text="customer_asked, disputed_charge, cap, ...")
    detail = models.TextField(blank=True, help_text="The exact point of uncertainty")
    facts = models.JSONField(default=dict)
    state = models.CharField(
        max_length=10, choices=EscalationState.choices, default=EscalationState.OPEN
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One live escalation per ticket: a repeated step cannot open a second one.
            models.UniqueConstraint(
                fields=["ticket"],
                condition=Q(state__in=["open", "claimed"]),
                name="escalation_one_live_per_ticket",
            )
        ]

    def __str__(self) -> str:
        return f"Escalation #{self.pk} of ticket {self.ticket_id} ({self.state})"


class DeadLetter(models.Model):
    """A run that failed for good: the error and the checkpoint it can be retried from."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="dead_letters")
    error = models.TextField()
    step = models.PositiveIntegerField()
    checkpoint = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    retried_at = models.DateTimeField(null=True, blank=True)
    discarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Dead letter of run {self.run_id} at step {self.step}"


class KillSwitchScope(models.TextChoices):
    GLOBAL = "global", "All agent work"
    CUSTOMER = "customer", "One customer"


class KillSwitch(models.Model):
    scope = models.CharField(max_length=10, choices=KillSwitchScope.choices)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, null=True, blank=True)
    enabled = models.BooleanField(default=True)
    reason = models.CharField(max_length=200, blank=True)
    updated_by = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope"], condition=Q(scope="global"), name="kill_switch_one_global"
            ),
            models.UniqueConstraint(
                fields=["customer"], condition=Q(scope="customer"), name="kill_switch_per_customer"
            ),
            models.CheckConstraint(
                condition=Q(scope="global", customer__isnull=True)
                | Q(scope="customer", customer__isnull=False),
                name="kill_switch_scope_matches_customer",
            ),
        ]

    def __str__(self) -> str:
        who = "global" if self.scope == "global" else f"customer {self.customer_id}"
        return f"Kill switch {who} ({'on' if self.enabled else 'off'})"


class RouterExemplar(models.Model):
    """A labelled example ticket for the router's nearest-neighbour tier (staff can edit)."""

    text = models.TextField()
    lane = models.CharField(max_length=8, choices=Lane.choices)
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    model_id = models.CharField(max_length=100, help_text="The embedding model of `embedding`")
    source = models.CharField(max_length=20, default="seed")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["text", "model_id"], name="router_exemplar_unique")
        ]
        indexes = [
            HnswIndex(
                name="router_exemplar_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            )
        ]

    def __str__(self) -> str:
        return f"{self.lane}: {self.text[:60]}"


class GuardIntervention(models.Model):
    """A reply draft the reply guard refused, and what was sent instead."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="guard_interventions")
    lane = models.CharField(max_length=8, choices=Lane.choices)
    draft = models.TextField()
    violations = models.JSONField(default=list)
    action = models.CharField(max_length=20, help_text="regenerated or replaced")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Guard {self.action} a {self.lane} draft of ticket {self.ticket_id}"


class RefundNotice(models.Model):
    """News of a refund request posted to a ticket's conversation: once per state."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="refund_notices")
    refund_request = models.ForeignKey(RefundRequest, on_delete=models.CASCADE)
    state = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ticket", "refund_request", "state"], name="refund_notice_once"
            )
        ]

    def __str__(self) -> str:
        return f"Ticket {self.ticket_id}: refund request {self.refund_request_id} {self.state}"


# --- the surfaces: API keys, the staff audit trail, answer ratings ----------------------------
class ApiScope(models.TextChoices):
    TICKETS = "tickets", "Tickets (open, read and follow up on tickets)"
    STAFF = "staff", "Staff (refund decisions, help-center articles)"


class ApiKey(models.Model):
    """A key for the REST API. Only a hash of the secret is stored; `prefix` (the part before
    the dot, shown in lists and the audit trail) finds the row. A rotated key stays valid until
    `expires_at`, which rotation sets to the end of the grace period; revoking is immediate."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=128)
    scopes = models.JSONField(default=list, help_text="A list of ApiScope values")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys"
    )
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Bound to this customer: it reads and writes only their tickets",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replaces"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEntry(models.Model):
    """One staff action: who, what, when, and through which page or key. Written in the same
    transaction as the action it records; never edited."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="audit_entries"
    )
    action = models.CharField(max_length=60, help_text="refund_request.approve, ...")
    target = models.CharField(max_length=100, help_text="refund_request:12, article:vat, ...")
    detail = models.JSONField(default=dict, blank=True)
    via = models.CharField(max_length=120, help_text="page:/staff/approvals/12, api_key:ab12cd…")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["target", "created_at"])]

    def __str__(self) -> str:
        return f"{self.actor_id} {self.action} {self.target}"


class AnswerRating(models.Model):
    """A customer's verdict on an answer. "helpful" counts as a confirmed resolution. One per
    ticket message answered; rating again replaces the verdict."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="ratings")
    message_seq = models.PositiveIntegerField(help_text="The conversation message rated")
    helpful = models.BooleanField()
    comment = models.TextField(blank=True)
    lane = models.CharField(max_length=8, choices=Lane.choices, blank=True)
    release = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ticket", "message_seq"], name="rating_once_per_answer")
        ]

    def __str__(self) -> str:
        verdict = "helpful" if self.helpful else "not helpful"
        return f"Ticket {self.ticket_id} #{self.message_seq}: {verdict}"
