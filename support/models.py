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


class Run(models.Model):
    """The state of a ticket's work. `checkpoint` is everything a worker needs to take the next
    step: the lane's own state, caps consumed, prompt and tool versions, model ids."""

    ticket = models.OneToOneField(Ticket, on_delete=models.CASCADE, related_name="run")
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
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} step {self.step} ({self.status})"


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
