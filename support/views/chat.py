"""The customer chat (mounted at /): sign-in, conversations, live events, ratings, help articles.

Thin views: they authenticate the customer (a session whose user is linked to a
billing.Customer), scope every ticket lookup by that customer (support.selectors — another
customer's ticket is a 404, never a 403 that would confirm it exists), and call services.
Every page works without JavaScript (forms post and redirect); support/static/support/chat.js
adds the live view: the answer streamed over Server-Sent Events (`events`), resumed from
Last-Event-ID, with polling of `status` as the fallback.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import login, logout
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from markdown_it import MarkdownIt

from billing.models import Customer
from memory import selectors as memory_selectors
from memory.models import MessageRole
from support import api_auth, events, live, ratings, selectors, services, signin
from support.models import AnswerRating, Ticket

app_name = "chat"

HUMAN_TEXT = "I'd like to talk to a human, please."
RECENT_TICKETS = 20
CHAT_STREAM_SECONDS = 300.0  # a stream ends then and the browser reconnects (Last-Event-ID)

View = Callable[..., HttpResponseBase]


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def customer_required(view: View) -> View:
    """Only a signed-in customer; `request.customer` is theirs. Others go to the sign-in page
    (a JSON caller gets 401)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        customer = signin.customer_for_user(request.user)
        if customer is None:
            if _wants_json(request):
                return JsonResponse({"error": "sign in first"}, status=401)
            return redirect(f"{reverse('chat:signin')}?next={request.path}")
        request.customer = customer  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapper


def _ticket_or_404(customer: Customer, ticket_id: int) -> Ticket:
    ticket = selectors.ticket_get_for_customer(customer=customer, ticket_id=ticket_id)
    if ticket is None:
        raise Http404("No such conversation")
    return ticket


def _safe_next(value: str | None) -> str:
    # Only a local path: never an open redirect.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return reverse("chat:home")


# --- sign-in ------------------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
def signin_page(request: HttpRequest) -> HttpResponse:
    """The sign-in page: email for a magic link, and the demo customers in development."""
    context: dict[str, Any] = {
        "demo_customers": signin.demo_customers(),
        "demo_enabled": settings.DEMO_SIGNIN_ENABLED,
        "next": _safe_next(request.GET.get("next") or request.POST.get("next")),
    }
    if request.method == "POST":
        email = (request.POST.get("email") or "").strip()
        # (A NUL would reach Postgres, which refuses it: a 500 instead of this answer.)
        if not email or "@" not in email or len(email) > 254 or "\x00" in email:
            context["error"] = "Please enter the email address of your Ledgerly account."
            return render(request, "chat/signin.html", context, status=400)
        signin.magic_link_send(
            email=email,
            link_for=lambda token: request.build_absolute_uri(
                reverse("chat:magic_link", kwargs={"token": token})
            ),
        )
        # The same answer whether or not the address is a customer's: no account probing.
        context["sent_to"] = email
    return render(request, "chat/signin.html", context)


@require_POST
def demo_signin(request: HttpRequest) -> HttpResponse:
    if not settings.DEMO_SIGNIN_ENABLED:
        raise Http404("The demo sign-in is off")
    try:
        user = signin.demo_user(email=(request.POST.get("email") or "").strip())
    except signin.SignInRefused as exc:
        context = {
            "demo_customers": signin.demo_customers(),
            "demo_enabled": True,
            "error": str(exc).capitalize() + ".",
            "next": reverse("chat:home"),
        }
        return render(request, "chat/signin.html", context, status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect(_safe_next(request.POST.get("next")))


@require_http_methods(["GET", "POST"])
def magic_link(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks to confirm (mail scanners open links; only the POST signs in and uses it up)."""
    try:
        user = signin.magic_user(token=token)
    except signin.SignInRefused as exc:
        return render(request, "chat/magic_link.html", {"error": str(exc)}, status=400)
    if request.method == "GET":
        return render(request, "chat/magic_link.html", {"token": token})
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect("chat:home")


@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("chat:signin")


# --- conversations ------------------------------------------------------------------------------
def _message_rows(ticket: Ticket, after_seq: int = 0) -> list[dict[str, Any]]:
    messages = [m for m in selectors.ticket_messages(ticket=ticket) if m.seq > after_seq]
    rated = {
        r.message_seq: r
        for r in AnswerRating.objects.filter(ticket=ticket, message_seq__gt=after_seq)
    }
    last_answer = next((m.seq for m in reversed(messages) if m.role != MessageRole.CUSTOMER), None)
    rows = []
    for m in messages:
        rating = rated.get(m.seq)
        rows.append(
            {
                "seq": m.seq,
                "role": m.role,
                "text": m.content,
                "at": m.created_at.isoformat(),
                # Sources are kept with the ticket's latest reply only.
                "sources": _sources(ticket)
                if m.seq == last_answer and m.content == ticket.reply
                else [],
                "rating": None
                if rating is None
                else {"helpful": rating.helpful, "comment": rating.comment},
            }
        )
    return rows


def _sources(ticket: Ticket) -> list[dict[str, str]]:
    return [
        {
            "slug": str(s["slug"]),
            "title": str(s.get("title") or s["slug"]),
            "url": reverse("chat:article", kwargs={"slug": str(s["slug"])}),
        }
        for s in (ticket.sources or [])
        if isinstance(s, dict) and s.get("slug")
    ]


def _ticket_list(customer: Customer) -> list[Ticket]:
    return list(selectors.tickets_for_customer(customer=customer)[:RECENT_TICKETS])


@require_GET
@customer_required
def home(request: HttpRequest) -> HttpResponse:
    customer: Customer = request.customer  # type: ignore[attr-defined]
    return render(
        request,
        "chat/conversation.html",
        {"customer": customer, "tickets": _ticket_list(customer), "ticket": None},
    )


@require_GET
@customer_required
def conversation(request: HttpRequest, ticket_id: int) -> HttpResponse:
    customer: Customer = request.customer  # type: ignore[attr-defined]
    ticket = _ticket_or_404(customer, ticket_id)
    # The page shows the rows as they are now; its event stream starts after the newest event
    # (or where a redirect after posting said, so nothing published since the post is missed).
    cursor = events.valid_event_id(request.GET.get("after")) or events.last_event_id(
        ticket_id=ticket.pk
    )
    return render(
        request,
        "chat/conversation.html",
        {
            "customer": customer,
            "tickets": _ticket_list(customer),
            "ticket": ticket,
            "messages": _message_rows(ticket),
            "status": live.ticket_status(ticket=ticket),
            "cursor": cursor,
        },
    )


def _submitted(request: HttpRequest, ticket: Ticket, cursor: str) -> HttpResponse:
    status = live.ticket_status(ticket=ticket)
    mine = next(
        (m for m in reversed(_message_rows(ticket)) if m["role"] == MessageRole.CUSTOMER), None
    )
    # The first status goes out at once, before a worker picks the message up.
    live.publish_status(ticket_id=ticket.pk, text=live.WORKING_TEXT["route"], state=ticket.state)
    url = reverse("chat:conversation", kwargs={"ticket_id": ticket.pk})
    if _wants_json(request):
        return JsonResponse(
            {
                "ticket_id": ticket.pk,
                "url": url,
                "cursor": cursor,
                "events": reverse("chat:events", kwargs={"ticket_id": ticket.pk}),
                "status_url": reverse("chat:status", kwargs={"ticket_id": ticket.pk}),
                "message_url": reverse("chat:message_new", kwargs={"ticket_id": ticket.pk}),
                "human_url": reverse("chat:human", kwargs={"ticket_id": ticket.pk}),
                "rate_url": reverse("chat:rate", kwargs={"ticket_id": ticket.pk}),
                "subject": ticket.subject,
                "status": status.as_dict(),
                "message": mine,
            },
            status=202,
        )
    return redirect(f"{url}?after={cursor}", status=303)


def _submit(
    request: HttpRequest, customer: Customer, text: str, ticket: Ticket | None
) -> HttpResponse:
    cursor = "0-0" if ticket is None else events.last_event_id(ticket_id=ticket.pk)
    # The customer's rate limit is the API's (one bucket per customer): each message queues
    # model work, so the chat is no way around it.
    wait = api_auth.rate_limit_take(api_key_id=None, customer_id=customer.pk)
    try:
        if wait:
            raise _TooMany(math.ceil(wait))
        submitted = services.ticket_submit(
            customer=customer, text=text, channel="chat", ticket=ticket
        )
    except (services.IntakeError, _TooMany) as exc:
        code = 429 if isinstance(exc, _TooMany) else 400
        response: HttpResponse
        if _wants_json(request):
            response = JsonResponse({"error": str(exc)}, status=code)
        else:
            response = _submit_failed(request, customer, text, ticket, cursor, str(exc), code)
        if isinstance(exc, _TooMany):
            response["Retry-After"] = str(exc.seconds)
        return response
    return _submitted(request, submitted, cursor)


class _TooMany(Exception):
    def __init__(self, seconds: int) -> None:
        self.seconds = max(1, seconds)
        super().__init__(f"you are sending messages too quickly; try again in {self.seconds} s")


def _submit_failed(
    request: HttpRequest,
    customer: Customer,
    text: str,
    ticket: Ticket | None,
    cursor: str,
    error: str,
    status: int,
) -> HttpResponse:
    context = {
        "customer": customer,
        "tickets": _ticket_list(customer),
        "ticket": ticket,
        "messages": _message_rows(ticket) if ticket else [],
        "status": live.ticket_status(ticket=ticket) if ticket else None,
        "cursor": cursor,
        "error": f"Your message could not be sent: {error}.",
        "draft": text[:20000],
    }
    return render(request, "chat/conversation.html", context, status=status)


@require_POST
@customer_required
def ticket_new(request: HttpRequest) -> HttpResponse:
    customer: Customer = request.customer  # type: ignore[attr-defined]
    return _submit(request, customer, request.POST.get("text") or "", None)


@require_POST
@customer_required
def message_new(request: HttpRequest, ticket_id: int) -> HttpResponse:
    customer: Customer = request.customer  # type: ignore[attr-defined]
    ticket = _ticket_or_404(customer, ticket_id)
    return _submit(request, customer, request.POST.get("text") or "", ticket)


@require_POST
@customer_required
def human(request: HttpRequest, ticket_id: int | None = None) -> HttpResponse:
    """ "Talk to a human": a message saying so, which the pipeline answers by escalating (the
    router's wants_human), in the conversation so staff see what came before."""
    customer: Customer = request.customer  # type: ignore[attr-defined]
    ticket = _ticket_or_404(customer, ticket_id) if ticket_id is not None else None
    return _submit(request, customer, HUMAN_TEXT, ticket)


@require_GET
@customer_required
def status(request: HttpRequest, ticket_id: int) -> JsonResponse:
    """The polling fallback: the ticket's status and its messages after `after_seq`."""
    customer: Customer = request.customer  # type: ignore[attr-defined]
    ticket = _ticket_or_404(customer, ticket_id)
    try:
        after_seq = max(0, int(request.GET.get("after_seq") or 0))
    except ValueError:
        return JsonResponse({"error": "after_seq must be a whole number"}, status=400)
    return JsonResponse(
        {
            "ticket_id": ticket.pk,
            "state": ticket.state,
            "lane": ticket.lane,
            "status": live.ticket_status(ticket=ticket).as_dict(),
            "messages": _message_rows(ticket, after_seq),
            "cursor": events.last_event_id(ticket_id=ticket.pk),
        }
    )


@require_POST
@customer_required
def rate(request: HttpRequest, ticket_id: int) -> HttpResponse:
    customer: Customer = request.customer  # type: ignore[attr-defined]
    ticket = _ticket_or_404(customer, ticket_id)
    verdict = request.POST.get("helpful")
    try:
        seq = int(request.POST.get("message_seq") or "")
        if verdict not in ("yes", "no"):
            raise ratings.RatingRefused("say whether the answer helped (yes or no)")
        ratings.answer_rate(
            ticket=ticket,
            message_seq=seq,
            helpful=verdict == "yes",
            comment=request.POST.get("comment") or "",
        )
    except ValueError as exc:  # RatingRefused is a ValueError, as is a bad number
        message = str(exc) if isinstance(exc, ratings.RatingRefused) else "which answer?"
        if _wants_json(request):
            return JsonResponse({"error": message}, status=400)
        return HttpResponse(f"Your rating could not be saved: {message}.", status=400)
    if _wants_json(request):
        return JsonResponse({"saved": True, "message_seq": seq, "helpful": verdict == "yes"})
    url = reverse("chat:conversation", kwargs={"ticket_id": ticket.pk})
    return redirect(f"{url}#m{seq}", status=303)


# --- live events (ASGI) -------------------------------------------------------------------------
@sync_to_async
def _authorized_ticket_id(request: HttpRequest, ticket_id: int) -> int | None:
    customer = signin.customer_for_user(request.user)
    if customer is None:
        return None
    ticket = selectors.ticket_get_for_customer(customer=customer, ticket_id=ticket_id)
    return None if ticket is None else ticket.pk


async def ticket_events(request: HttpRequest, ticket_id: int) -> HttpResponseBase:
    """Server-Sent Events for one of the customer's tickets. The browser's EventSource sends
    Last-Event-ID when it reconnects; a first connection says where to start with `?after=`."""
    if request.method != "GET":
        return JsonResponse({"error": "GET only"}, status=405)
    user = await request.auser()  # resolves the lazy user in async code
    if not user.is_authenticated:
        return JsonResponse({"error": "sign in first"}, status=401)
    allowed = await _authorized_ticket_id(request, ticket_id)
    if allowed is None:
        raise Http404("No such conversation")
    slot = await sync_to_async(events.stream_slot_take)(
        reader=f"user:{user.pk}", lifetime_seconds=CHAT_STREAM_SECONDS
    )
    if slot is None:  # EventSource gives up on a non-200; the page then polls
        refused = JsonResponse({"error": "too many open conversations"}, status=429)
        refused["Retry-After"] = "5"
        return refused
    last = request.headers.get("Last-Event-ID") or request.GET.get("after")
    stream: AsyncIterator[bytes] = events.sse_stream(
        ticket_id=allowed, last_event_id=last, max_seconds=CHAT_STREAM_SECONDS, slot=slot
    )
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy must pass events on as they come
    return response


# --- help center --------------------------------------------------------------------------------
@require_GET
def article(request: HttpRequest, slug: str) -> HttpResponse:
    """A help-center article, public (the answers cite these)."""
    found = memory_selectors.article_get_by_slug(slug=slug)
    if found is None:
        raise Http404("No such article")
    # Markdown without raw HTML: whatever an article's text holds is escaped.
    body = MarkdownIt("commonmark", {"html": False}).render(found.body)
    return render(request, "chat/article.html", {"article": found, "body": mark_safe(body)})  # noqa: S308


urlpatterns = [
    path("", home, name="home"),
    path("signin/", signin_page, name="signin"),
    path("signin/demo/", demo_signin, name="demo_signin"),
    path("signin/link/<str:token>/", magic_link, name="magic_link"),
    path("signout/", signout, name="signout"),
    path("tickets/", ticket_new, name="ticket_new"),
    path("human/", human, name="human_new"),
    path("tickets/<int:ticket_id>/", conversation, name="conversation"),
    path("tickets/<int:ticket_id>/messages/", message_new, name="message_new"),
    path("tickets/<int:ticket_id>/human/", human, name="human"),
    path("tickets/<int:ticket_id>/status/", status, name="status"),
    path("tickets/<int:ticket_id>/ratings/", rate, name="rate"),
    path("tickets/<int:ticket_id>/events/", ticket_events, name="events"),
    path("help/<slug:slug>/", article, name="article"),
]
