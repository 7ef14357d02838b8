"""The authorization matrix: every principal × every page route (walked from the URL resolver)
and every REST operation (read from the OpenAPI schema), judged against one declared policy.

A route or operation that no rule of the policy covers fails the test, so a new one cannot
escape. Path parameters are filled with real ids of customer A's objects (ticket, refund
request, escalation, article slug, ...), so a leak shows as a success for B with A's data in the
body. The cells run on committed rows, as a server would (intake refuses to run inside a
transaction), each in a fresh client, so a sign-out in one cell does not sign out the next. So
that an allowed write cannot hide a later cell's answer, each target is tried by the principals
the policy refuses first, and the operations that delete run last.

A cell is a leak when the policy denies the principal but the response is not a denial
(401/403/404, or a redirect to a sign-in page), or when a body that the principal may not see A
in holds A's marker (a phrase only A's ticket contains) or A's email. A cell the policy allows
but the response denies is an over-denial: reported and failed too (the policy or the route is
wrong). A 5xx fails either way.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.http import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404

pytestmark = pytest.mark.django_db

ANA, BEN = "ana.lopez@example.com", "ben.okafor@example.com"
MARKER = f"matrix-probe-{secrets.token_hex(6)}"

# --- principals ---------------------------------------------------------------------------------
ANONYMOUS = "anonymous"
CUSTOMER_A = "customer A (session)"
CUSTOMER_B = "customer B (session)"
STAFF = "staff without approver permission"
APPROVER = "staff with billing.decide_refundrequest"
KEY_TICKETS_A = "API key scope tickets, bound to A"
KEY_STAFF = "API key scope staff"
KEY_TICKETS_B = "API key scope tickets, bound to B (the other customer)"
PRINCIPALS = [
    ANONYMOUS,
    CUSTOMER_A,
    CUSTOMER_B,
    STAFF,
    APPROVER,
    KEY_TICKETS_A,
    KEY_STAFF,
    KEY_TICKETS_B,
]
# Who may see A's data in a body: A, and staff (sessions and the staff key).
MAY_SEE_A = frozenset({CUSTOMER_A, KEY_TICKETS_A, STAFF, APPROVER, KEY_STAFF})

# --- the policy ----------------------------------------------------------------------------------
EVERYONE = frozenset(PRINCIPALS)
NOBODY: frozenset[str] = frozenset()
CUSTOMERS = frozenset({CUSTOMER_A, CUSTOMER_B})  # page sessions
STAFF_SESSIONS = frozenset({STAFF, APPROVER})
TICKETS_API = frozenset({CUSTOMER_A, CUSTOMER_B, KEY_TICKETS_A, KEY_TICKETS_B})
STAFF_API = frozenset({STAFF, APPROVER, KEY_STAFF})
DECIDE_API = frozenset({APPROVER, KEY_STAFF})  # the staff key's owner is an approver
# Principals that speak for A; an object of A's in the path narrows a customer rule to them.
A_SIDE = frozenset({CUSTOMER_A, KEY_TICKETS_A})
SPEAK_FOR_CUSTOMERS = frozenset({CUSTOMER_A, CUSTOMER_B, KEY_TICKETS_A, KEY_TICKETS_B})


@dataclass(frozen=True)
class Rule:
    """Who gets through. `owned`: the path names one of A's objects, and customers other than
    A must be refused it. `either`: principals for whom both outcomes are right (the admin's
    per-model permissions decide for staff)."""

    name: str
    allowed: frozenset[str]
    owned: bool = False
    either: frozenset[str] = NOBODY
    scope: str | None = None  # an operation's: must be the x-required-scope it declares
    # The development sign-in lists the demo customers (A among them) by design: on it only the
    # marker counts as A's data, not A's email.
    lists_demo_customers: bool = False


PUBLIC = Rule("public", EVERYONE)
# Signing out answers with a redirect to the sign-in page, for anyone: both outcomes are right.
SIGN_OUT = Rule("sign out", NOBODY, either=EVERYONE)

# Page routes, matched in order against the route as written ("staff/approvals/<int:pk>/").
PAGE_POLICY: list[tuple[str, Rule]] = [
    # Probes and metrics: no one's data, for load balancers and Prometheus.
    (r"^(healthz|readyz|metrics)$", PUBLIC),
    # Django admin: is_staff to enter, then each model's own view/change permissions.
    (r"^admin/(login|logout)/$", PUBLIC),
    (
        r"^admin/",
        Rule("admin (staff; per-model permissions)", NOBODY, either=STAFF_SESSIONS),
    ),
    # Staff pages: signing in is for everyone, deciding a refund for approvers, the rest staff.
    (r"^staff/login/$", PUBLIC),
    (r"^staff/logout/$", SIGN_OUT),
    (
        r"^staff/approvals/<int:pk>/(approve|reject)$",
        Rule("refund decision", frozenset({APPROVER})),
    ),
    (r"^staff/", Rule("staff pages", STAFF_SESSIONS)),
    # The customer chat: signing in and the help-center articles are public; a conversation is
    # its customer's alone (another customer's is a 404); the rest is for signed-in customers.
    (r"^(signin/|signin/demo/)$", Rule("demo sign-in", EVERYONE, lists_demo_customers=True)),
    (r"^signin/link/<str:token>/$", PUBLIC),
    (r"^signout/$", SIGN_OUT),
    (r"^help/<slug:slug>/$", PUBLIC),
    (r"^tickets/<int:ticket_id>/", Rule("chat, A's conversation", CUSTOMERS, owned=True)),
    (r"^(|tickets/|human/)$", Rule("chat (signed-in customers)", CUSTOMERS)),
]

# REST operations, matched in order against "METHOD /path/{param}" of the OpenAPI schema.
TICKETS_OWNED = Rule("tickets scope, A's ticket", TICKETS_API, owned=True, scope="tickets")
API_POLICY: list[tuple[str, Rule]] = [
    (r"^[A-Z]+ /api/v1/tickets/\{ticket_id\}", TICKETS_OWNED),
    (r"^(GET|POST) /api/v1/tickets$", Rule("tickets scope", TICKETS_API, scope="tickets")),
    (
        r"^POST /api/v1/refund-requests/\{refund_request_id\}/(approve|reject)$",
        Rule("staff scope, refund decision", DECIDE_API, scope="staff"),
    ),
    (r"^GET /api/v1/refund-requests", Rule("staff scope", STAFF_API, scope="staff")),
    (r"^[A-Z]+ /api/v1/helpcenter/", Rule("staff scope (help center)", STAFF_API, scope="staff")),
]
# The API's routes that are not operations: its documents (no one's data) and the uniform 404
# for any other path under /api/ (refused to everyone alike).
PAGE_POLICY += [
    (r"^api/v1/(openapi\.json|docs)$", PUBLIC),
    (r"^api/docs$", PUBLIC),
    # ninja's root (it only names the API's base path; a 404 for everyone), and the uniform 404.
    (r"^api/(v1/)?$", Rule("no such API route", NOBODY)),
]

# Routes not put through the matrix (matched like the policy), each with the reason. Static files
# are not in the resolver at all: WhiteNoise's middleware serves them (the apps' public assets;
# no customer data); there are no media uploads.
EXCLUDED_PAGES: list[tuple[str, str]] = [
    (
        r"^admin/\w+/\w+/(add/|<path:object_id>/(history|delete)/|<path:object_id>/)$",
        "the admin's add, history, delete and bare-object pages of each model check the same "
        "is_staff gate and model permissions as its list and change pages, which are in",
    ),
]


def excluded(route: str) -> str | None:
    for pattern, reason in EXCLUDED_PAGES:
        if re.search(pattern, route):
            return reason
    return None


# --- the objects the paths name -------------------------------------------------------------------
@dataclass
class World:
    a_user: User
    b_user: User
    staff: User
    approver: User
    keys: dict[str, str]
    ids: dict[str, Any] = field(default_factory=dict)


def build_world() -> World:
    from billing.models import Charge, Customer
    from billing.services import refund_request_create
    from memory.models import Article
    from support import apikeys, services
    from support.models import DeadLetter, Escalation, KillSwitch, Run

    call_command("seed_demo", verbosity=0)
    ana, ben = Customer.objects.get(email=ANA), Customer.objects.get(email=BEN)
    approver = User.objects.get(username="staff")
    staff = User.objects.create_user("matrix-staff", "matrix-staff@ledgerly.example", is_staff=True)
    ticket = services.ticket_submit(
        customer=ana, text=f"Why was I charged twice? {MARKER}", channel="web"
    )
    refund = refund_request_create(
        customer=ana,
        charge=Charge.objects.get(ref="ch_demo_ana_2"),
        proposed_by="matrix",
        reason=MARKER,
    )
    ticket.refund_request = refund
    ticket.save(update_fields=["refund_request"])
    escalation = Escalation.objects.create(ticket=ticket, reason="matrix", detail=MARKER)
    dead_letter = DeadLetter.objects.create(
        run=Run.objects.get(ticket=ticket), error=MARKER, step=0
    )
    KillSwitch.objects.create(scope="customer", customer=ana, enabled=False, reason=MARKER)
    article = Article.objects.create(
        slug="bank-transfer", title="Bank transfer", section="Payments", body="Pay by wire."
    )
    keys = {
        KEY_TICKETS_A: apikeys.api_key_create(
            name="matrix A", scopes=["tickets"], owner=approver, customer=ana
        ).plaintext,
        KEY_TICKETS_B: apikeys.api_key_create(
            name="matrix B", scopes=["tickets"], owner=approver, customer=ben
        ).plaintext,
        KEY_STAFF: apikeys.api_key_create(
            name="matrix staff", scopes=["staff"], owner=approver
        ).plaintext,
    }
    world = World(
        a_user=User.objects.get(customer=ana),
        b_user=User.objects.get(customer=ben),
        staff=staff,
        approver=approver,
        keys=keys,
    )
    world.ids = {
        "ticket": ticket.pk,
        "refund_request": refund.pk,
        "escalation": escalation.pk,
        "dead_letter": dead_letter.pk,
        "article": article.slug,
        "message_seq": 1,
        "token": "matrix-no-such-token",
    }
    return world


def article_restore(world: World) -> None:
    """Put the article back after a DELETE, so the next principal deletes a real one too."""
    from memory.models import Article
    from memory.services import article_create

    slug = world.ids["article"]
    if not Article.objects.filter(slug=slug).exists():
        article_create(slug=slug, title="Bank transfer", section="Payments", body="Pay by wire.")


# Which of A's objects a path parameter names: (route regex, parameter) -> object.
PARAMS: list[tuple[str, str, str]] = [
    (r"approvals/", "pk", "refund_request"),
    (r"escalations/", "pk", "escalation"),
    (r"dead-letters/", "pk", "dead_letter"),
    (r"articles/", "slug", "article"),
    (r"^help/", "slug", "article"),
    (r"^signin/link/", "token", "token"),
    (r"(^|/)tickets/", "ticket_id", "ticket"),
    (r"/refund-requests/", "refund_request_id", "refund_request"),
    (r"/articles/", "slug", "article"),
]


def param_value(world: World, route: str, name: str) -> Any:
    for pattern, param, key in PARAMS:
        if param == name and re.search(pattern, route):
            return world.ids[key]
    raise AssertionError(f"{route}: no value for path parameter {name!r}; add it to PARAMS")


# --- the page routes ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PageRoute:
    route: str  # as written, prefixes joined: "staff/approvals/<int:pk>/"
    params: tuple[str, ...]
    regex: bool


def _pattern_text(pattern: Any) -> tuple[str, bool]:
    route = getattr(pattern, "_route", None)
    if route is not None:
        return str(route), False
    return str(pattern._regex), True


ROUTE_PARAM = r"(?<!\?P)<(?:\w+:)?(\w+)>"  # <int:pk>, <slug>; not a regex's (?P<name>


def walk(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[PageRoute]:
    """Every URLPattern under `resolver`, with its full route."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        text, is_regex = _pattern_text(entry.pattern)
        if is_regex:
            text = (
                text.lstrip("^").rstrip("$") if isinstance(entry, URLPattern) else text.lstrip("^")
            )
        full = prefix + text
        if isinstance(entry, URLResolver):
            yield from walk(entry, full)
        else:
            names = re.findall(ROUTE_PARAM, full) + re.findall(r"\(\?P<(\w+)>", full)
            yield PageRoute(route=full, params=tuple(names), regex="(?P<" in full or "\\" in full)


def _regex_path(route: str, values: dict[str, Any]) -> str:
    def group(match: re.Match[str]) -> str:
        return str(values[match.group(1)])

    path = re.sub(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)", group, route)
    return path.replace("\\", "").lstrip("^").rstrip("$")


ADMIN_VALUES: dict[str, Callable[[World, str], Any]] = {}


def page_path(world: World, page: PageRoute) -> str:
    values: dict[str, Any] = {}
    for name in page.params:
        values[name] = (
            admin_param(world, page.route, name)
            if page.route.startswith("admin/")
            else param_value(world, page.route, name)
        )
    path = re.sub(ROUTE_PARAM, lambda m: str(values[m.group(1)]), page.route)
    if page.regex:
        path = _regex_path(path, values)
    return "/" + path


def admin_param(world: World, route: str, name: str) -> Any:
    """The admin's parameters: an app, a model's object (A's where it has a customer)."""
    from django.apps import apps
    from django.contrib.contenttypes.models import ContentType

    if name == "app_label":
        return "billing"
    if name == "url":
        return "no-such-page/"
    if name == "content_type_id":
        return ContentType.objects.get_for_model(User).pk
    if name == "id":  # admin/auth/user/<id>/password/
        return world.a_user.pk
    if name == "object_id":
        match = re.match(r"admin/(\w+)/(\w+)/", route)
        if match is None:  # admin/r/<content_type_id>/<object_id>/
            return world.a_user.pk
        model = apps.get_model(match.group(1), match.group(2))
        rows = model._default_manager.order_by("pk")
        if any(f.name == "customer" for f in model._meta.get_fields()):
            rows = rows.filter(customer__user=world.a_user)
        first = rows.first()
        return first.pk if first is not None else 999_999
    raise AssertionError(f"{route}: no value for admin parameter {name!r}")


def page_rule(route: str) -> Rule | None:
    for pattern, rule in PAGE_POLICY:
        if re.search(pattern, route):
            return rule
    return None


# --- the REST operations ------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # "/api/v1/tickets/{ticket_id}"
    spec: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


def schema_operations(schema: dict[str, Any]) -> list[Operation]:
    ops = []
    for path, item in schema["paths"].items():
        for method, spec in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                ops.append(Operation(method.upper(), path, spec))
    return ops


def api_rule(op: Operation) -> Rule | None:
    for pattern, rule in API_POLICY:
        if re.search(pattern, op.key):
            return rule
    return None


def example(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A small valid value for a JSON schema: required fields only, the first enum value."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example(components["schemas"][name], components, depth + 1)
    for combo in ("allOf", "anyOf", "oneOf"):
        if combo in schema:
            options = [s for s in schema[combo] if s.get("type") != "null"]
            return example(options[0], components, depth + 1)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example(props[k], components, depth + 1) for k in schema.get("required", [])}
    if kind == "array":
        return [] if not schema.get("minItems") else [example(schema["items"], components)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return max(1.0, schema.get("minimum", 1.0))
    if kind == "boolean":
        return False
    return ("matrix probe " * 4)[
        : max(schema.get("minLength", 1), min(40, schema.get("maxLength", 40)))
    ].strip() or "x"


# Query parameters that make an allowed call stop at validation (a 422: authorization passed)
# instead of doing costly work; the refused principals must still be refused before it.
COSTLY_QUERY = {
    # A valid call embeds the whole help center (tens of seconds on a busy machine).
    "POST /api/v1/helpcenter/ingest": {"prune": "not-a-boolean"},
}


def operation_request(world: World, op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    path = op.path
    query: dict[str, Any] = dict(COSTLY_QUERY.get(op.key, {}))
    for param in op.spec.get("parameters", []):
        if param["in"] == "path":
            path = path.replace(
                "{" + param["name"] + "}", str(param_value(world, op.path, param["name"]))
            )
        elif param["in"] == "query" and param.get("required"):
            query[param["name"]] = example(param.get("schema", {}), components)
    body = None
    content = op.spec.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = json.dumps(example(content["application/json"]["schema"], components))
    return {"path": path, "query": query, "body": body}


# --- running a cell -----------------------------------------------------------------------------
SIGN_IN_VIEWS = {"staff:login", "admin:login", "chat:signin"}


def client_for(world: World, principal: str) -> tuple[Client, dict[str, str]]:
    client = Client()
    users = {
        CUSTOMER_A: world.a_user,
        CUSTOMER_B: world.b_user,
        STAFF: world.staff,
        APPROVER: world.approver,
    }
    if principal in users:
        client.force_login(users[principal])
    headers = {}
    if principal in world.keys:
        headers["Authorization"] = f"Bearer {world.keys[principal]}"
    return client, headers


def is_sign_in_redirect(response: HttpResponseBase) -> bool:
    if response.status_code not in (301, 302, 303):
        return False
    location = response["Location"].split("?", 1)[0]
    location = re.sub(r"^https?://[^/]+", "", location)
    try:
        return resolve(location).view_name in SIGN_IN_VIEWS
    except Resolver404:
        return False


def denied(response: HttpResponseBase) -> bool:
    return response.status_code in (401, 403, 404) or is_sign_in_redirect(response)


@dataclass
class Cell:
    target: str
    principal: str
    rule: Rule
    status: int
    verdict: str  # "ok", "leak", "over-denied", "5xx"
    note: str = ""
    seconds: float = 0.0


def judge(target: str, principal: str, rule: Rule, response: HttpResponseBase, body: str) -> Cell:
    status = response.status_code
    # On A's object, the customer principals that do not speak for A are refused.
    allowed = rule.allowed - (SPEAK_FOR_CUSTOMERS - A_SIDE) if rule.owned else rule.allowed
    if status >= 500:
        return Cell(target, principal, rule, status, "5xx", body[:300])
    email_shown = ANA in body and not rule.lists_demo_customers
    if principal not in MAY_SEE_A and (MARKER in body or email_shown):
        return Cell(target, principal, rule, status, "leak", "A's data in the body")
    if principal in rule.either:
        return Cell(target, principal, rule, status, "ok")
    if principal in allowed:
        verdict = "over-denied" if denied(response) else "ok"
        return Cell(target, principal, rule, status, verdict)
    return Cell(target, principal, rule, status, "ok" if denied(response) else "leak")


def run_cell(
    world: World, principal: str, method: str, path: str, *, query=None, body=None
) -> tuple[HttpResponseBase, str]:
    client, headers = client_for(world, principal)
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs.update(data=body, content_type="application/json")
    if query:
        path = f"{path}?{urlencode(query)}"
    response = getattr(client, method.lower())(path, **kwargs)
    text = ""
    if not getattr(response, "streaming", False):  # an event stream would never end
        text = response.content.decode(errors="replace")
    response.close()
    return response, text


def refused_first(rule: Rule) -> list[str]:
    allowed = rule.allowed | rule.either
    return [p for p in PRINCIPALS if p not in allowed] + [p for p in PRINCIPALS if p in allowed]


# --- the tests ----------------------------------------------------------------------------------
@pytest.fixture
def world(settings, transactional_db, redis_client) -> World:
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 1_000_000
    settings.API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE = 1_000_000
    return build_world()


def page_routes(schema: dict[str, Any]) -> list[PageRoute]:
    """Every route of the resolver but the API's operations (the schema's part of the matrix).
    An API route missing from the schema (include_in_schema=False) stays here, where no rule
    covers it unless one is written for it."""
    documented = set(schema["paths"])
    unique: dict[str, PageRoute] = {}
    for page in walk():  # ninja has one pattern per method of a path; the first one serves
        unique.setdefault(page.route, page)
    return [
        p for p in unique.values() if "/" + re.sub(ROUTE_PARAM, r"{\1}", p.route) not in documented
    ]


def test_every_route_and_operation_is_covered_by_the_policy(client):
    schema = client.get("/api/v1/openapi.json").json()
    uncovered = [
        p.route for p in page_routes(schema) if not excluded(p.route) and page_rule(p.route) is None
    ]
    uncovered += [op.key for op in schema_operations(schema) if api_rule(op) is None]
    assert uncovered == [], "not in the policy table (add a rule): " + ", ".join(uncovered)


def test_operations_declare_their_authentication(client):
    """Safe by default: every operation names the security it needs in the schema."""
    schema = client.get("/api/v1/openapi.json").json()
    declared = {op.key: op.spec.get("x-required-scope") for op in schema_operations(schema)}
    bare = [key for key, scope in declared.items() if not scope]
    assert bare == []
    # The scope each operation declares is the one the policy expects of it.
    wrong = {
        op.key: (declared[op.key], rule.scope)
        for op in schema_operations(schema)
        if (rule := api_rule(op)) is not None and declared[op.key] != rule.scope
    }
    assert wrong == {}


def page_cells(
    world: World, schema: dict[str, Any], principals: list[str] | None = None
) -> Iterator[Cell]:
    for page in page_routes(schema):
        if excluded(page.route):
            continue
        rule = page_rule(page.route)
        assert rule is not None, page.route
        path = page_path(world, page)
        for principal in refused_first(rule):
            if principals is not None and principal not in principals:
                continue
            started = time.monotonic()
            response, body = run_cell(world, principal, "GET", path)
            if response.status_code == 405:
                response, body = run_cell(world, principal, "POST", path)
            cell = judge(page.route, principal, rule, response, body)
            cell.seconds = time.monotonic() - started
            yield cell


def operation_cells(
    world: World, schema: dict[str, Any], principals: list[str] | None = None
) -> Iterator[Cell]:
    components = schema.get("components", {})
    for op in sorted(schema_operations(schema), key=lambda op: op.method == "DELETE"):
        rule = api_rule(op)
        assert rule is not None, op.key
        request = operation_request(world, op, components)
        for principal in refused_first(rule):
            if principals is not None and principal not in principals:
                continue
            if op.method == "DELETE":
                article_restore(world)
            started = time.monotonic()
            response, body = run_cell(
                world,
                principal,
                op.method,
                request["path"],
                query=request["query"],
                body=request["body"],
            )
            cell = judge(op.key, principal, rule, response, body)
            cell.seconds = time.monotonic() - started
            yield cell


@pytest.mark.slow
def test_authorization_matrix_has_no_leaks(world, capsys, monkeypatch):
    schema = Client().get("/api/v1/openapi.json").json()
    cells = [*page_cells(world, schema), *operation_cells(world, schema)]
    skipped = [p.route for p in page_routes(schema) if excluded(p.route)]

    # The matrix can fail: with the chat's and the API's ownership checks dropped, B reaches
    # A's conversation (the chat's selector, the API's key scoping), and the matrix says so.
    from support import selectors
    from support.models import Ticket

    monkeypatch.setattr(
        selectors,
        "ticket_get_for_customer",
        lambda *, customer, ticket_id: Ticket.objects.filter(pk=ticket_id).first(),
    )
    monkeypatch.setattr("support.api.tickets_for_api_key", lambda *, api_key: Ticket.objects.all())
    planted = [
        c
        for c in [
            *page_cells(world, schema, [CUSTOMER_B]),
            *operation_cells(world, schema, [KEY_TICKETS_B]),
        ]
        if c.verdict == "leak"
    ]
    monkeypatch.undo()

    bad = [c for c in cells if c.verdict != "ok"]
    leaks = [c for c in bad if c.verdict == "leak"]
    targets = {c.target for c in cells}
    operations = {t for t in targets if re.match(r"^[A-Z]+ /", t)}
    with capsys.disabled():
        print(
            f"\nauthorization matrix: {len(cells)} cells = {len(targets)} targets "
            f"({len(targets) - len(operations)} page routes + {len(operations)} API operations)"
            f" × {len(PRINCIPALS)} principals; {len(leaks)} leaks, "
            f"{len(bad) - len(leaks)} other failures; {len(skipped)} admin routes summarized "
            f"(EXCLUDED_PAGES); with ownership checks removed on purpose: {len(planted)} leaks "
            f"found ({', '.join(sorted({c.target for c in planted}))})"
        )
        slowest: dict[str, float] = {}
        for c in cells:
            slowest[c.target] = slowest.get(c.target, 0.0) + c.seconds
        top = sorted(slowest.items(), key=lambda kv: -kv[1])[:5]
        print("  slowest targets: " + ", ".join(f"{t} {s:.1f} s" for t, s in top))
        for c in bad:
            print(f"  {c.verdict}: {c.principal} → {c.target}: {c.status} {c.note}")
    assert bad == []
    planted_targets = {c.target for c in planted}
    assert "tickets/<int:ticket_id>/" in planted_targets
    assert "GET /api/v1/tickets/{ticket_id}" in planted_targets
