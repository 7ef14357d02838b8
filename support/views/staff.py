"""The staff pages (mounted at /staff/): the approval queue, the escalations inbox, dead letters,
kill switches, help-center articles, the operations page and the audit trail.

Thin: check who is asking, call a selector or an audited staff action, render. Session sign-in
with CSRF on every form. Anyone signed in who is not active staff gets a 403 page; refund
decisions further need `billing.decide_refundrequest` (billing enforces it; the page says so
plainly and answers 403 to a non-approver's POST). Every action is a POST that redirects back
(a reload never repeats it) and writes an audit entry with `via="page:<path>"`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing import selectors as billing_selectors
from billing.models import Customer, RefundRequest, RefundRequestState
from billing.policy import format_money
from billing.services import RefundRequestStateError
from memory import selectors as memory_selectors
from memory.models import Article
from support import operations, staff_actions
from support.models import DeadLetter, Escalation, EscalationState, KillSwitchScope, TicketState
from support.services import EscalationClosed, IntakeError
from support.staff_actions import StaffInputError
from support.views.charts import bar_chart, percent

app_name = "staff"
DECIDE_PERMISSION = "billing.decide_refundrequest"
NOT_APPROVER = (
    "You can read the approval queue, but deciding refund requests needs the refund-approver "
    "permission (billing | refund request | Can approve or reject refund requests). Ask an "
    "administrator to grant it."
)
NOT_STAFF = (
    "These pages are for Ledgerly staff. You are signed in as {user}, which is not a staff "
    "account. Sign in with a staff account to continue."
)

View = Callable[..., HttpResponse]


# --- who may see what -----------------------------------------------------------------------------
def _forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "staff/forbidden.html", {"message": message}, status=403)


def staff_page(view: View) -> View:
    """Anonymous → the staff sign-in (then back here); signed in but not active staff → 403."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("staff:login"))
        if not (user.is_active and user.is_staff):
            return _forbidden(request, NOT_STAFF.format(user=user.get_username()))
        return view(request, *args, **kwargs)

    return wrapped


def _staff(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # staff_page lets only signed-in staff through
        raise PermissionDenied("staff only")
    return user


def _can_decide(request: HttpRequest) -> bool:
    return request.user.has_perm(DECIDE_PERMISSION)


def _via(request: HttpRequest) -> str:
    return f"page:{request.path}"


class StaffAuthenticationForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "not_staff": "This account is not a staff account. The staff pages need one.",
    }

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise ValidationError(self.error_messages["not_staff"], code="not_staff")


class StaffLoginView(auth_views.LoginView):
    template_name = "staff/login.html"
    authentication_form = StaffAuthenticationForm
    next_page = "/staff/approvals/"


class StaffLogoutView(auth_views.LogoutView):
    next_page = "/staff/login/"


# --- the approval queue ---------------------------------------------------------------------------
@require_GET
@staff_page
def index(request: HttpRequest) -> HttpResponse:
    return redirect("staff:approvals")


@require_GET
@staff_page
def approvals(request: HttpRequest) -> HttpResponse:
    rows = list(billing_selectors.refund_requests_awaiting_decision())
    return render(
        request,
        "staff/approvals.html",
        {"requests": rows, "can_decide": _can_decide(request), "section": "approvals"},
    )


@require_GET
@staff_page
def approvals_history(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "staff/approvals_history.html",
        {"requests": list(operations.refund_requests_history()), "section": "approvals"},
    )


def _approval_page(
    request: HttpRequest, refund_request: RefundRequest, *, status: int = 200, error: str = ""
) -> HttpResponse:
    review = operations.refund_request_review(refund_request=refund_request)
    return render(
        request,
        "staff/approval.html",
        {
            "review": review,
            "r": review.request,
            "amount": format_money(review.request.amount, review.request.currency),
            "can_decide": _can_decide(request),
            "not_approver": NOT_APPROVER,
            "decidable": review.request.state == RefundRequestState.PROPOSED and not review.expired,
            "audit": list(operations.audit_entries(target=f"refund_request:{refund_request.pk}")),
            "error": error,
            "section": "approvals",
        },
        status=status,
    )


@require_GET
@staff_page
def approval(request: HttpRequest, pk: int) -> HttpResponse:
    return _approval_page(request, get_object_or_404(RefundRequest, pk=pk))


def _decide(request: HttpRequest, pk: int, *, approve: bool) -> HttpResponse:
    refund_request = get_object_or_404(RefundRequest, pk=pk)
    if not _can_decide(request):
        return _forbidden(request, NOT_APPROVER)
    note = request.POST.get("note", "")
    action = (
        staff_actions.refund_request_approve if approve else staff_actions.refund_request_reject
    )
    try:
        decided = action(
            refund_request=refund_request, actor=_staff(request), note=note, via=_via(request)
        )
    except StaffInputError as exc:
        return _approval_page(request, refund_request, status=400, error=str(exc))
    except RefundRequestStateError:
        refund_request.refresh_from_db()
        who = refund_request.decided_by.get_username() if refund_request.decided_by else None
        error = f"This request is {refund_request.get_state_display().lower()} already" + (
            f" (decided by {who})." if who else "."
        )
        if refund_request.state == RefundRequestState.PROPOSED:
            error = "This request is past its expiry: it can no longer be decided."
        return _approval_page(request, refund_request, status=409, error=error)
    except PermissionDenied:
        return _forbidden(request, NOT_APPROVER)
    amount = format_money(decided.amount, decided.currency)
    verb = "Approved" if approve else "Rejected"
    tail = " The refund is being executed." if approve else " The customer is told the reason."
    messages.success(request, f"{verb} refund request #{decided.pk} for {amount}.{tail}")
    return redirect("staff:approval", pk=decided.pk)


@require_POST
@staff_page
def approval_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, approve=True)


@require_POST
@staff_page
def approval_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, approve=False)


# --- escalations ----------------------------------------------------------------------------------
@require_GET
@staff_page
def escalations(request: HttpRequest) -> HttpResponse:
    show_resolved = request.GET.get("show") == "resolved"
    rows = list(operations.escalations_inbox(include_resolved=show_resolved)[:200])
    return render(
        request,
        "staff/escalations.html",
        {"escalations": rows, "show_resolved": show_resolved, "section": "escalations"},
    )


def _escalation_page(
    request: HttpRequest,
    escalation: Escalation,
    *,
    status: int = 200,
    error: str = "",
    text: str = "",
) -> HttpResponse:
    from support.selectors import ticket_messages

    return render(
        request,
        "staff/escalation.html",
        {
            "e": escalation,
            "ticket": escalation.ticket,
            "conversation": ticket_messages(ticket=escalation.ticket),
            "facts": escalation.facts or {},
            "live": escalation.state != EscalationState.RESOLVED,
            "audit": list(operations.audit_entries(target=f"escalation:{escalation.pk}")),
            "error": error,
            "text": text,
            "section": "escalations",
        },
        status=status,
    )


def _escalation(pk: int) -> Escalation:
    return get_object_or_404(
        Escalation.objects.select_related("ticket__customer", "claimed_by"), pk=pk
    )


@require_GET
@staff_page
def escalation(request: HttpRequest, pk: int) -> HttpResponse:
    return _escalation_page(request, _escalation(pk))


@require_POST
@staff_page
def escalation_claim(request: HttpRequest, pk: int) -> HttpResponse:
    found = _escalation(pk)
    if staff_actions.escalation_claim(escalation=found, actor=_staff(request), via=_via(request)):
        messages.success(request, f"You claimed escalation #{found.pk}.")
        return redirect("staff:escalation", pk=found.pk)
    holder = found.claimed_by.get_username() if found.claimed_by else "nobody"
    error = f"Escalation #{found.pk} is {found.get_state_display().lower()} (claimed by {holder})."
    return _escalation_page(request, found, status=409, error=error)


@require_POST
@staff_page
def escalation_reply(request: HttpRequest, pk: int) -> HttpResponse:
    found = _escalation(pk)
    text = request.POST.get("text", "")
    try:
        staff_actions.escalation_reply(
            escalation=found, actor=_staff(request), text=text, via=_via(request)
        )
    except IntakeError as exc:
        return _escalation_page(request, found, status=400, error=f"Not sent: {exc}.", text=text)
    except EscalationClosed:
        error = "Not sent: this escalation is resolved."
        return _escalation_page(request, found, status=409, error=error, text=text)
    messages.success(request, "Your reply is in the customer's chat.")
    return redirect("staff:escalation", pk=found.pk)


@require_POST
@staff_page
def escalation_resolve(request: HttpRequest, pk: int) -> HttpResponse:
    found = _escalation(pk)
    if not staff_actions.escalation_resolve(
        escalation=found, actor=_staff(request), via=_via(request)
    ):
        return _escalation_page(request, found, status=409, error="It was resolved already.")
    messages.success(request, f"Escalation #{found.pk} resolved.")
    return redirect("staff:escalations")


# --- dead letters ---------------------------------------------------------------------------------
@require_GET
@staff_page
def dead_letters(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "staff/dead_letters.html",
        {
            "live": list(operations.dead_letters_live()[:200]),
            "done": list(operations.dead_letters_done()),
            "section": "dead_letters",
        },
    )


def _dead_letter_action(request: HttpRequest, pk: int, *, retry: bool) -> HttpResponse:
    letter = get_object_or_404(DeadLetter, pk=pk)
    action = staff_actions.dead_letter_retry if retry else staff_actions.dead_letter_discard
    if action(dead_letter=letter, actor=_staff(request), via=_via(request)):
        done = "resumed from its last checkpoint" if retry else "discarded"
        messages.success(request, f"Dead letter #{letter.pk}: run {letter.run_id} {done}.")
    else:
        messages.error(
            request, f"Dead letter #{letter.pk} was retried or discarded already; nothing changed."
        )
    return redirect("staff:dead_letters")


@require_POST
@staff_page
def dead_letter_retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _dead_letter_action(request, pk, retry=True)


@require_POST
@staff_page
def dead_letter_discard(request: HttpRequest, pk: int) -> HttpResponse:
    return _dead_letter_action(request, pk, retry=False)


# --- kill switches --------------------------------------------------------------------------------
class KillSwitchForm(forms.Form):
    scope = forms.ChoiceField(choices=KillSwitchScope.choices)
    customer = forms.CharField(required=False, max_length=254)
    enabled = forms.TypedChoiceField(
        choices=[("on", "on"), ("off", "off")], coerce=lambda v: v == "on"
    )
    reason = forms.CharField(required=False, max_length=200)


def _kill_switches_page(
    request: HttpRequest, *, status: int = 200, error: str = ""
) -> HttpResponse:
    switches = list(operations.kill_switches())
    global_switch = next((s for s in switches if s.scope == KillSwitchScope.GLOBAL), None)
    return render(
        request,
        "staff/kill_switches.html",
        {
            "global_switch": global_switch,
            "customer_switches": [s for s in switches if s.scope == KillSwitchScope.CUSTOMER],
            "customers": list(Customer.objects.order_by("email").values_list("email", flat=True)),
            "error": error,
            "section": "kill_switches",
        },
        status=status,
    )


@require_GET
@staff_page
def kill_switches(request: HttpRequest) -> HttpResponse:
    return _kill_switches_page(request)


@require_POST
@staff_page
def kill_switch_set(request: HttpRequest) -> HttpResponse:
    form = KillSwitchForm(request.POST)
    if not form.is_valid():
        return _kill_switches_page(request, status=400, error="Choose a scope and on or off.")
    data = form.cleaned_data
    customer = None
    if data["scope"] == KillSwitchScope.CUSTOMER:
        customer = billing_selectors.customer_get_by_email(email=data["customer"].strip())
        if customer is None:
            return _kill_switches_page(
                request, status=400, error="No customer with that email address."
            )
    try:
        staff_actions.kill_switch_set(
            enabled=data["enabled"],
            actor=_staff(request),
            reason=data["reason"],
            via=_via(request),
            customer=customer,
        )
    except StaffInputError as exc:
        return _kill_switches_page(request, status=400, error=f"Not changed: {exc}.")
    who = customer.email if customer else "all agent work"
    messages.success(request, f"Kill switch for {who} is {'ON' if data['enabled'] else 'off'}.")
    return redirect("staff:kill_switches")


# --- help-center articles -------------------------------------------------------------------------
@require_GET
@staff_page
def articles(request: HttpRequest) -> HttpResponse:
    rows = memory_selectors.articles_list()
    return render(
        request,
        "staff/articles.html",
        {"articles": rows, "kb_version": memory_selectors.kb_version_get(), "section": "articles"},
    )


def _article(slug: str) -> Article:
    found = memory_selectors.article_get_by_slug(slug=slug)
    if found is None:
        raise Http404("no such article")
    return found


@require_http_methods(["GET", "POST"])
@staff_page
def article(request: HttpRequest, slug: str) -> HttpResponse:
    found = _article(slug)
    values = {f: getattr(found, f) for f in ("title", "section", "body", "keywords")}
    status, error = 200, ""
    if request.method == "POST":
        values = {f: request.POST.get(f, "") for f in values}
        try:
            saved = staff_actions.article_edit(
                article=found, actor=_staff(request), via=_via(request), **values
            )
        except StaffInputError as exc:
            status, error = 400, f"Not saved: {exc}."
        else:
            messages.success(request, f"Saved “{saved.title}”; re-indexed if its content changed.")
            return redirect("staff:article", slug=saved.slug)
    return render(
        request,
        "staff/article.html",
        {
            "article": found,
            "values": values,
            "indexed": found.indexed_hash == found.content_hash,
            "chunks": found.chunks.count(),
            "error": error,
            "section": "articles",
        },
        status=status,
    )


@require_POST
@staff_page
def article_reindex(request: HttpRequest, slug: str) -> HttpResponse:
    found = _article(slug)
    written = staff_actions.article_reindex(article=found, actor=_staff(request), via=_via(request))
    messages.success(request, f"Re-indexed “{found.title}”: {written} passages embedded.")
    return redirect("staff:article", slug=found.slug)


# --- operations -----------------------------------------------------------------------------------
def _usd(value: Decimal | None) -> str:
    return "n/a" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


@require_GET
@staff_page
def operations_page(request: HttpRequest) -> HttpResponse:
    figures = operations.operations_figures()
    lanes = figures.lanes
    s = figures.spend
    spend_chart = bar_chart(
        id="chart-spend",
        title="Model spend against budget",
        desc=(
            f"Today {_usd(s.today_usd)} of {_usd(s.daily_budget_usd)} "
            f"({percent(s.today_fraction)}); this month {_usd(s.month_usd)} of "
            f"{_usd(s.monthly_budget_usd)} ({percent(s.month_fraction)})."
        ),
        rows=[
            (
                "Today (UTC)",
                float(s.today_usd),
                f"{_usd(s.today_usd)} / {_usd(s.daily_budget_usd)}",
            ),
            (
                "This month",
                float(s.month_usd),
                f"{_usd(s.month_usd)} / {_usd(s.monthly_budget_usd)}",
            ),
        ],
        scales=[float(s.daily_budget_usd), float(s.monthly_budget_usd)],
    )
    states = [(TicketState(k).label, v) for k, v in figures.tickets_by_state.items()]
    state_chart = bar_chart(
        id="chart-states",
        title="Tickets by state",
        desc="; ".join(f"{label}: {n}" for label, n in states),
        rows=[(label, float(n), str(n)) for label, n in states],
    )
    r = figures.rates
    rate_rows = [
        ("Involvement", r.involvement_rate),
        ("Resolution (all)", r.resolution_rate),
        ("… confirmed", r.confirmed_resolution_rate),
        ("… assumed", r.assumed_resolution_rate),
        ("Automation (all)", r.automation_rate),
        ("… confirmed", r.confirmed_automation_rate),
        ("… assumed", r.assumed_automation_rate),
    ]
    rates_chart = bar_chart(
        id="chart-rates",
        title="Involvement, resolution and automation",
        desc="; ".join(f"{label}: {percent(v)}" for label, v in rate_rows),
        rows=[(label, v or 0.0, percent(v)) for label, v in rate_rows],
        maximum=1.0,
    )
    lane_totals = [c for c in figures.lane_costs if c.model == "all"]
    cost_chart = bar_chart(
        id="chart-cost",
        title="Cost per ticket by lane",
        desc="; ".join(
            f"{lanes.get(c.lane, c.lane or 'not routed')}: {_usd(c.per_ticket_usd)} per ticket, "
            f"{_usd(c.per_resolution_usd)} per resolution"
            for c in lane_totals
        ),
        rows=[
            (
                lanes.get(c.lane, c.lane or "not routed"),
                float(c.per_ticket_usd or 0),
                _usd(c.per_ticket_usd),
            )
            for c in lane_totals
        ],
    )
    c = figures.cache
    cache_rows = [
        ("Answer cache (FAQ)", c.semantic_hit_rate),
        ("Prompt cache tokens", c.prompt_cache_hit_rate),
        ("Calls with cache read", c.calls_cache_read_rate),
    ]
    cache_chart = bar_chart(
        id="chart-cache",
        title="Cache hit rates",
        desc="; ".join(f"{label}: {percent(v)}" for label, v in cache_rows),
        rows=[(label, v or 0.0, percent(v)) for label, v in cache_rows],
        maximum=1.0,
    )
    approval_chart = bar_chart(
        id="chart-approvals",
        title="Refund approval rate by plan and interval",
        desc="; ".join(
            f"{a.plan} {a.interval}: {percent(a.approval_rate)} of {a.approved + a.rejected}"
            for a in figures.approvals
        ),
        rows=[
            (f"{a.plan} {a.interval}", a.approval_rate or 0.0, percent(a.approval_rate))
            for a in figures.approvals
        ],
        maximum=1.0,
    )
    ratings_chart = bar_chart(
        id="chart-ratings",
        title="Answers rated helpful, by lane",
        desc="; ".join(
            f"{lanes.get(x.lane, x.lane or 'unknown')}: {percent(x.helpful_share)} of "
            f"{x.helpful + x.not_helpful}"
            for x in figures.ratings
        ),
        rows=[
            (
                lanes.get(x.lane, x.lane or "unknown"),
                x.helpful_share or 0.0,
                percent(x.helpful_share),
            )
            for x in figures.ratings
        ],
        maximum=1.0,
    )
    return render(
        request,
        "staff/operations.html",
        {
            "f": figures,
            "charts": {
                "spend": spend_chart,
                "states": state_chart,
                "rates": rates_chart,
                "cost": cost_chart,
                "cache": cache_chart,
                "approvals": approval_chart,
                "ratings": ratings_chart,
            },
            "states": [(k, TicketState(k).label, v) for k, v in figures.tickets_by_state.items()],
            "rate_rows": [
                ("involvement-rate", "Involvement rate", r.involvement_rate, r.involved),
                ("resolution-rate", "Resolution rate", r.resolution_rate, r.confirmed + r.assumed),
                (
                    "confirmed-resolution-rate",
                    "Confirmed resolution rate",
                    r.confirmed_resolution_rate,
                    r.confirmed,
                ),
                (
                    "assumed-resolution-rate",
                    "Assumed resolution rate",
                    r.assumed_resolution_rate,
                    r.assumed,
                ),
                (
                    "automation-rate",
                    "Automation rate",
                    r.automation_rate,
                    r.automated_confirmed + r.automated_assumed,
                ),
                (
                    "confirmed-automation-rate",
                    "Confirmed automation rate",
                    r.confirmed_automation_rate,
                    r.automated_confirmed,
                ),
                (
                    "assumed-automation-rate",
                    "Assumed automation rate",
                    r.assumed_automation_rate,
                    r.automated_assumed,
                ),
            ],
            "lanes": lanes,
            "section": "operations",
        },
    )


# --- audit trail ----------------------------------------------------------------------------------
@require_GET
@staff_page
def audit(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "staff/audit.html",
        {"entries": list(operations.audit_entries()), "section": "audit"},
    )


urlpatterns: list[URLPattern] = [
    path("login/", StaffLoginView.as_view(), name="login"),
    path("logout/", StaffLogoutView.as_view(), name="logout"),
    path("", index, name="index"),
    path("approvals/", approvals, name="approvals"),
    path("approvals/history/", approvals_history, name="approvals_history"),
    path("approvals/<int:pk>/", approval, name="approval"),
    path("approvals/<int:pk>/approve", approval_approve, name="approval_approve"),
    path("approvals/<int:pk>/reject", approval_reject, name="approval_reject"),
    path("escalations/", escalations, name="escalations"),
    path("escalations/<int:pk>/", escalation, name="escalation"),
    path("escalations/<int:pk>/claim", escalation_claim, name="escalation_claim"),
    path("escalations/<int:pk>/reply", escalation_reply, name="escalation_reply"),
    path("escalations/<int:pk>/resolve", escalation_resolve, name="escalation_resolve"),
    path("dead-letters/", dead_letters, name="dead_letters"),
    path("dead-letters/<int:pk>/retry", dead_letter_retry, name="dead_letter_retry"),
    path("dead-letters/<int:pk>/discard", dead_letter_discard, name="dead_letter_discard"),
    path("kill-switches/", kill_switches, name="kill_switches"),
    path("kill-switches/set", kill_switch_set, name="kill_switch_set"),
    path("articles/", articles, name="articles"),
    path("articles/<slug:slug>/", article, name="article"),
    path("articles/<slug:slug>/reindex", article_reindex, name="article_reindex"),
    path("operations/", operations_page, name="operations"),
    path("audit/", audit, name="audit"),
]
