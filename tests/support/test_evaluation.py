"""The evaluation harness (support/evaluation.py, manage.py evaluate).

The grading is pure: outcomes in, grades and figures out, so most of it is tested without a
worker. One slow end-to-end test runs three small cases through the real command (its own
private servers, worker and beat) and checks what it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from billing import demo as ev_demo
from support import evaluation as ev
from support.management.commands.evaluate import wants_private_services

ROOT = Path(__file__).resolve().parents[2]


def _case(expect: dict, *, case_id: str = "c1", customer: str | None = None) -> ev.Case:
    raw = {"id": case_id, "customer": customer, "messages": ["hello"], "expect": expect}
    return ev.parse_case(raw, origin="test:1")


def _refund(amount: str = "49.00", currency: str = "USD", auto: bool = False) -> ev.ActualRefund:
    return ev.ActualRefund(amount=Decimal(amount), currency=currency, auto_approved=auto)


# --- normalisation and facts ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "fact"),
    [
        ("Refunds take 5\u201310 business days.", "5-10 business days"),
        ("Refunds take 5\u201410 business days.", "5-10 BUSINESS DAYS"),
        ("within   14\n days of the charge", "14 days"),
        ("The remaining\u00a0$9.00 can be refunded", "$9.00"),
        ("Go to SETTINGS \u2192 Billing", "settings"),
        ("a refund of \u20ac1,990.00", "\u20ac1,990.00"),
    ],
)
def test_a_fact_matches_whatever_case_whitespace_and_dashes(reply, fact):
    assert ev.contains(reply, fact)


@pytest.mark.parametrize(
    ("reply", "fact"),
    [
        ("a refund of \u20ac1990.00", "\u20ac1,990.00"),  # amounts are matched as written
        ("$49", "$49.00"),
        ("1 business days", "14 days"),
        ("14days", "14 days"),
    ],
)
def test_a_fact_does_not_match_other_text(reply, fact):
    assert not ev.contains(reply, fact)


def test_normalise_collapses_whitespace_and_dashes_and_case():
    assert ev.normalise("  A\u2013B \u2014 c\t\nD  ") == "a-b - c d"


def test_facts_must_all_be_in_the_final_reply_and_absent_strings_must_not():
    case = _case({"facts": ["$49.00", "1 business day"], "absent": ["approved", "ben@"]})
    ok = ev.grade(
        expect=case.expect,
        outcome=ev.Outcome(reply="Your $49.00 refund waits for staff: 1 business day."),
    )
    missing = ev.grade(expect=case.expect, outcome=ev.Outcome(reply="Your $49.00 refund."))
    leaked = ev.grade(
        expect=case.expect,
        outcome=ev.Outcome(reply="Your $49.00 refund was APPROVED within 1 business day."),
    )
    assert (ok.passed, ok.checks["facts"]) == (True, True)
    assert (missing.passed, missing.checks["facts"]) == (False, False)
    assert missing.failures == ("fact: missing '1 business day'",)
    assert leaked.failures == ("absent: found 'approved'",)


# --- lane, refund, escalation, approval -----------------------------------------------------------
def test_lane_is_the_first_messages_lane():
    case = _case({"lane": "refund"})
    assert ev.grade(expect=case.expect, outcome=ev.Outcome(lane="refund")).passed
    wrong = ev.grade(expect=case.expect, outcome=ev.Outcome(lane="agent"))
    assert wrong.failures == ("lane: expected refund, got agent",)
    unrouted = ev.grade(expect=case.expect, outcome=ev.Outcome(lane=""))
    assert unrouted.failures == ("lane: expected refund, got none",)


def test_the_baseline_leaves_the_lane_ungraded():
    case = _case({"lane": "refund", "escalated": False})
    result = ev.grade(expect=case.expect, outcome=ev.Outcome(lane="agent"), check_lane=False)
    assert result.passed
    assert result.checks == {"escalated": True, "approval": True}


@pytest.mark.parametrize(
    ("refunds", "passed"),
    [
        ((_refund("49.00", "USD", False),), True),
        ((_refund("49.00", "EUR", False),), False),
        ((_refund("49.01", "USD", False),), False),
        ((_refund("49.00", "USD", True),), False),
        ((), False),
        ((_refund(), _refund()), False),  # two requests: not "the" refund
    ],
)
def test_refund_matches_amount_currency_and_auto_approval(refunds, passed):
    case = _case({"refund": {"amount": "49.00", "currency": "USD", "auto_approved": False}})
    result = ev.grade(expect=case.expect, outcome=ev.Outcome(refunds=refunds))
    assert (result.passed, result.checks["refund"]) == (passed, passed)


def test_refund_null_means_no_request_was_left():
    case = _case({"refund": None})
    assert ev.grade(expect=case.expect, outcome=ev.Outcome()).passed
    made = ev.grade(expect=case.expect, outcome=ev.Outcome(refunds=(_refund("9.00"),)))
    assert made.failures == ("refund: expected none, got 9.00 USD (auto_approved=False)",)


def test_an_omitted_refund_key_is_not_checked():
    case = _case({"lane": "faq"})
    result = ev.grade(expect=case.expect, outcome=ev.Outcome(lane="faq", refunds=(_refund(),)))
    assert result.passed
    assert "refund" not in result.checks


@pytest.mark.parametrize(("expected", "actual"), [(True, False), (False, True)])
def test_escalation_must_match(expected, actual):
    case = _case({"escalated": expected})
    result = ev.grade(expect=case.expect, outcome=ev.Outcome(escalated=actual))
    assert result.failures == (f"escalated: expected {expected}, got {actual}",)
    assert ev.grade(expect=case.expect, outcome=ev.Outcome(escalated=expected)).passed


def test_a_refund_executed_without_approval_fails_any_case():
    case = _case({})  # nothing expected: the invariant is checked anyway
    outcome = ev.Outcome(unapproved=("refund request #7 (49.00 USD) is executed",))
    result = ev.grade(expect=case.expect, outcome=outcome)
    assert result.checks == {"approval": False}
    assert result.failures == ("approval: refund request #7 (49.00 USD) is executed",)


def test_a_timeout_fails_the_end_state_checks_but_keeps_the_routed_lane():
    case = _case({"lane": "faq", "facts": ["14 days"], "refund": None, "escalated": False})
    outcome = ev.Outcome(lane="faq", reply="within 14 days", timeout="message 1 of 1")
    result = ev.grade(expect=case.expect, outcome=outcome)
    assert result.failures == ("timeout: message 1 of 1",)
    assert result.checks == {
        "lane": True,
        "facts": False,
        "refund": False,
        "escalated": False,
        "approval": True,
    }


# --- parsing golden files -------------------------------------------------------------------------
def test_parse_keeps_omitted_and_null_refund_apart():
    assert _case({}).expect.refund_checked is False
    null = _case({"refund": None}).expect
    assert (null.refund_checked, null.refund) == (True, None)
    given = _case({"refund": {"amount": "58.31", "currency": "EUR", "auto_approved": False}})
    assert given.expect.refund == ev.ExpectedRefund(Decimal("58.31"), "EUR", False)


@pytest.mark.parametrize(
    "expect",
    [
        {"lane": "billing"},
        {"lanes": "faq"},  # a typo must not silently turn a check off
        {"facts": "14 days"},
        {"refund": {"amount": 49, "currency": "USD", "auto_approved": False}},
        {"refund": {"amount": "49.0", "currency": "USD", "auto_approved": False}},
        {"refund": {"amount": "49.00", "currency": "usd", "auto_approved": False}},
        {"refund": {"amount": "49.00", "currency": "USD"}},
        {"escalated": "yes"},
    ],
)
def test_off_format_expectations_are_refused(expect):
    with pytest.raises(ev.GoldenFormatError, match=r"^test:1: "):
        _case(expect)


def test_load_cases_reads_files_globs_and_directories_in_order(tmp_path):
    one = {"id": "a", "customer": None, "messages": ["x"], "expect": {"lane": "faq"}}
    two = {"id": "b", "customer": "ana.lopez@example.com", "messages": ["y", "z"], "expect": {}}
    (tmp_path / "1.jsonl").write_text(json.dumps(one) + "\n\n")
    (tmp_path / "2.jsonl").write_text(json.dumps(two) + "\n")
    (tmp_path / "notes.txt").write_text("not a case")
    by_dir = ev.load_cases([str(tmp_path)])
    by_glob = ev.load_cases([str(tmp_path / "*.jsonl")])
    by_file = ev.load_cases([str(tmp_path / "2.jsonl")])
    assert [c.id for c in by_dir] == [c.id for c in by_glob] == ["a", "b"]
    assert [(c.id, c.messages) for c in by_file] == [("b", ("y", "z"))]
    assert by_dir[1].origin == f"{tmp_path / '2.jsonl'}:1"


def test_load_cases_refuses_duplicate_ids_and_empty_globs(tmp_path):
    row = json.dumps({"id": "a", "customer": None, "messages": ["x"], "expect": {}})
    (tmp_path / "dup.jsonl").write_text(row + "\n" + row + "\n")
    with pytest.raises(ev.GoldenFormatError, match="duplicate id 'a'"):
        ev.load_cases([str(tmp_path)])
    with pytest.raises(ev.GoldenFormatError, match="no golden files"):
        ev.load_cases([str(tmp_path / "missing-*.jsonl")])


def test_the_golden_set_parses():
    cases = ev.load_cases([str(ROOT / "tests" / "golden")])
    assert len(cases) == len({c.id for c in cases}) >= 1


# --- figures --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("passes", "n", "k", "expected"),
    [
        ([3, 2, 0], 3, 3, 1 / 3),  # k = n: the fraction of cases that passed every repeat
        ([3, 2, 0], 3, 1, (1 + 2 / 3 + 0) / 3),  # k = 1: the mean pass rate
        ([3, 2, 0], 3, 2, (1 + 1 / 3 + 0) / 3),  # C(2,2)/C(3,2) = 1/3 for the middle case
        ([1, 0, 1, 1], 1, 1, 0.75),
        ([4, 4], 4, 2, 1.0),
    ],
)
def test_pass_hat_k(passes, n, k, expected):
    assert ev.pass_hat_k(passes, n=n, k=k) == pytest.approx(expected)


def test_pass_hat_k_needs_k_within_the_trials():
    with pytest.raises(ValueError, match="k must be between"):
        ev.pass_hat_k([1], n=2, k=3)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, 0.0), ([5.0], 95, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5), ([0.0, 10.0], 95, 9.5)],
)
def test_percentile(values, q, expected):
    assert ev.percentile(values, q) == pytest.approx(expected)


def _result(case: ev.Case, outcome: ev.Outcome, **figures) -> ev.CaseResult:
    return ev.CaseResult(
        case=case, outcome=outcome, grade=ev.grade(expect=case.expect, outcome=outcome), **figures
    )


def _two_repeats() -> list[list[ev.CaseResult]]:
    faq = _case({"lane": "faq", "facts": ["14 days"]}, case_id="faq")
    refund = _case(
        {"lane": "refund", "refund": {"amount": "19.00", "currency": "USD", "auto_approved": True}},
        case_id="ben",
        customer="ben.okafor@example.com",
    )
    good_faq = ev.Outcome(lane="faq", reply="within 14 days")
    good_refund = ev.Outcome(lane="refund", refunds=(_refund("19.00", auto=True),))
    timing = (ev.MessageTiming(wall_ms=1200.0, model_ms=1000.0, calls=2),)
    figures = {"tokens": 1000, "cost_usd": Decimal("0.01"), "model_calls": 2, "messages": timing}
    return [
        [_result(faq, good_faq, **figures), _result(refund, good_refund, **figures)],
        [
            _result(faq, good_faq, **figures),
            _result(refund, ev.Outcome(lane="agent"), **figures),
        ],
    ]


def test_summary_pools_repeats_and_counts_pass_all_k():
    summary = ev.summarise(_two_repeats())
    assert summary["cases"] == 2
    assert summary["repeats"] == 2
    assert summary["pass_rate"] == 0.75
    assert summary["pass_hat_k"] == {"1": 0.75, "2": 0.5}
    assert summary["pass_all_k"] == 0.5
    assert summary["passes"] == {"faq": 2, "ben": 1}
    assert summary["per_repeat_pass_rate"] == [1.0, 0.5]
    assert summary["lane_accuracy"] == 0.75
    assert summary["refund_accuracy"] == 0.5
    assert summary["fact_accuracy"] == 1.0
    assert summary["escalation_accuracy"] is None  # nothing checks it
    assert summary["cost_per_ticket_usd"] == 0.01
    assert summary["model_calls_per_ticket"] == 2
    assert summary["overhead_ms_p50"] == 200.0
    assert set(summary["lanes"]) == {"faq", "refund", "agent"}
    assert summary["lanes"]["faq"]["tickets"] == 2
    assert summary["lanes"]["faq"]["latency_s_p95"] == 1.2


def test_report_has_the_documented_shape_and_thresholds():
    thresholds = ev.Thresholds(
        pass_rate=0.9, lane_accuracy=0.5, refund_accuracy=0.9, escalation_accuracy=0.9
    )
    document = ev.report(_two_repeats(), thresholds=thresholds)
    assert set(document) == {"summary", "cases"}
    assert [c["id"] for c in document["cases"]] == ["faq", "ben"]  # the last repeat
    ben = document["cases"][1]
    assert set(ben) >= {
        "id", "lane", "reply", "refund", "escalated", "passed", "failures", "tokens",
        "cost_usd", "latency_s", "passes",
    }  # fmt: skip
    assert (ben["lane"], ben["refund"], ben["passed"], ben["passes"]) == ("agent", None, False, 1)
    assert ben["failures"] == [
        "lane: expected refund, got agent",
        "refund: expected 19.00 USD (auto_approved=True), got none",
    ]
    assert document["summary"]["below_thresholds"] == [
        "pass_rate 0.750 < 0.900",
        "refund_accuracy 0.500 < 0.900",
    ]
    json.dumps(document)  # serialisable as it is
    assert "BELOW THRESHOLD: pass_rate" in ev.format_table(document)


def test_an_unapproved_refund_is_below_threshold_whatever_the_rates():
    case = _case({}, case_id="x")
    results = [[_result(case, ev.Outcome(unapproved=("refund re_1 without a request",)))]]
    zero = ev.Thresholds(pass_rate=0, lane_accuracy=0, refund_accuracy=0, escalation_accuracy=0)
    assert ev.below_thresholds(ev.summarise(results), zero) == [
        "1 refund(s) executed without approval"
    ]


def test_schedule_keeps_each_customers_cases_in_one_sequential_group():
    cases = [
        _case({}, case_id="a1", customer="ana.lopez@example.com"),
        _case({}, case_id="n1"),
        _case({}, case_id="a2", customer="ana.lopez@example.com"),
        _case({}, case_id="n2"),
        _case({}, case_id="n3"),
        _case({}, case_id="b1", customer="ben.okafor@example.com"),
    ]
    groups = ev.schedule(cases)
    assert [[c.id for c in g] for g in groups] == [["n1", "n2", "n3"], ["a1", "a2"], ["b1"]]


@pytest.mark.parametrize(
    ("environ", "private"),
    [
        ({}, True),
        ({"DATABASE_URL": "postgresql://x/y"}, True),
        ({"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x"}, False),
        ({"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x",
          "LEDGERLY_EVAL_PRIVATE_SERVICES": "1"}, True),
        ({"LEDGERLY_EVAL_PRIVATE_SERVICES": "1", "LEDGERLY_EVAL_SERVICES_READY": "1"}, False),
    ],
)  # fmt: skip
def test_private_services_unless_both_urls_are_configured(environ, private):
    assert wants_private_services(environ) is private


@pytest.mark.parametrize(
    ("variable", "value"),
    [("EVAL_MIN_PASS_RATE", "1.5"), ("EVAL_MIN_LANE_ACCURACY", "-0.1"), ("EVAL_CONCURRENCY", "0")],
)
def test_a_threshold_outside_its_range_stops_startup_naming_it(variable, value):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "ledgerly.settings", variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert variable in done.stderr


# --- reading the end state from the rows (database, no worker) -----------------------------------
@pytest.fixture
def seeded(db) -> None:
    from django.utils import timezone

    from billing import demo

    demo.seed_demo(today=timezone.now().date())


def _ticket(email: str, **fields):
    from billing.models import Customer
    from memory.services import conversation_start
    from support.models import Ticket

    customer = Customer.objects.get(email=email)
    return Ticket.objects.create(
        customer=customer,
        conversation=conversation_start(customer=customer),
        state=fields.pop("state", "answered"),
        **fields,
    )


def _request(ticket, *, state: str = "", decided: bool = False):
    from django.contrib.auth.models import User

    from billing import demo, services
    from billing.models import Charge, RefundRequest

    charge = Charge.objects.get(ref=demo.SCENARIO_CHARGES[ticket.customer.email])
    request = services.refund_request_create(
        customer=ticket.customer, charge=charge, proposed_by="test", source=f"ticket:{ticket.pk}"
    )
    updates: dict[str, object] = {"state": state} if state else {}
    if decided:
        updates["decided_by"] = User.objects.create_user("approver")
    if updates:
        RefundRequest.objects.filter(pk=request.pk).update(decided_at=request.created_at, **updates)
    return request


def test_outcome_reads_lane_reply_refund_and_live_escalation(seeded):
    from django.utils import timezone

    from support.models import Escalation

    since = timezone.now()
    ticket = _ticket(ev_demo.ANA, first_lane="refund", lane="agent", reply="Your $49.00 refund")
    _request(ticket)
    Escalation.objects.create(ticket=ticket, reason="customer_asked", state="claimed")
    outcome = ev._outcome(ticket_pk=ticket.pk, customer=ticket.customer, since=since)
    assert (outcome.lane, outcome.reply, outcome.escalated) == (
        "refund",
        "Your $49.00 refund",
        True,
    )
    assert outcome.refunds == (ev.ActualRefund(Decimal("49.00"), "USD", False, "proposed"),)
    assert outcome.unapproved == ()


def test_outcome_leaves_out_withdrawn_requests_and_resolved_escalations(seeded):
    from django.utils import timezone

    from support.models import Escalation

    since = timezone.now()
    ticket = _ticket(ev_demo.ANA, first_lane="refund")
    _request(ticket, state="withdrawn")
    Escalation.objects.create(ticket=ticket, reason="customer_asked", state="resolved")
    outcome = ev._outcome(ticket_pk=ticket.pk, customer=ticket.customer, since=since)
    assert (outcome.refunds, outcome.escalated) == ((), False)


@pytest.mark.parametrize(("decided", "flagged"), [(False, True), (True, False)])
def test_an_executed_request_without_a_decision_is_flagged(seeded, decided, flagged):
    from django.utils import timezone

    since = timezone.now()
    ticket = _ticket(ev_demo.ISLA)
    request = _request(ticket, state="executed", decided=decided)
    outcome = ev._outcome(ticket_pk=ticket.pk, customer=ticket.customer, since=since)
    assert bool(outcome.unapproved) is flagged
    assert all(f"#{request.pk}" in u for u in outcome.unapproved)


def test_reset_customer_deletes_their_tickets_and_conversations_only(seeded):
    from billing.models import RefundRequest
    from memory.models import Conversation
    from support.models import Ticket

    ana = _ticket(ev_demo.ANA)
    _request(ana)
    ben = _ticket(ev_demo.BEN)
    ev.reset_customer(ana.customer)
    assert list(Ticket.objects.values_list("pk", flat=True)) == [ben.pk]
    assert list(Conversation.objects.values_list("customer__email", flat=True)) == [ev_demo.BEN]
    assert RefundRequest.objects.count() == 0


def test_background_customer_has_nothing_refundable(seeded):
    from django.utils import timezone

    from billing.policy import evaluate_refund

    customer = ev.background_customer()
    assert customer.ref.startswith("cus_bg_")
    assert (customer.currency, customer.country) == ("USD", "US")
    charges = list(customer.charges.all())
    assert charges
    assert not any(evaluate_refund(charge=c, at=timezone.now()).refundable for c in charges)


# --- end to end -----------------------------------------------------------------------------------
E2E_CASES = [
    {
        "id": "e2e-faq-refund-time",
        "customer": None,
        "messages": ["How long does it take for a refund to show up on my card?"],
        "expect": {"lane": "faq", "facts": ["business days"], "refund": None},
    },
    {
        "id": "e2e-ben-duplicate",
        "customer": "ben.okafor@example.com",
        "messages": ["I was charged twice for this month's invoice. Can I get one back?"],
        "expect": {
            "lane": "refund",
            "facts": ["$19.00"],
            "refund": {"amount": "19.00", "currency": "USD", "auto_approved": True},
            "escalated": False,
        },
    },
    {
        "id": "e2e-farid-disputed",
        "customer": "farid.haddad@example.com",
        "messages": ["Can I get a refund for my last payment?"],
        "expect": {"refund": None, "escalated": True},
    },
]


@pytest.mark.slow
def test_evaluate_command_scores_three_cases_end_to_end(tmp_path):
    golden = tmp_path / "e2e.jsonl"
    golden.write_text("".join(json.dumps(c) + "\n" for c in E2E_CASES))
    env = {**os.environ, "LEDGERLY_EVAL_PRIVATE_SERVICES": "1", "LOG_LEVEL": "WARNING"}
    env.pop("LEDGERLY_EVAL_SERVICES_READY", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "evaluate", str(golden), "--json", "--timeout", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    document = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert done.returncode == 0, done.stderr[-3000:]
    summary, cases = document["summary"], {c["id"]: c for c in document["cases"]}
    assert (summary["cases"], summary["repeats"], summary["pass_rate"]) == (3, 1, 1.0)
    assert summary["unapproved_refunds"] == 0
    assert cases["e2e-ben-duplicate"]["refund"] == {
        "amount": "19.00",
        "currency": "USD",
        "auto_approved": True,
    }
    assert cases["e2e-farid-disputed"]["escalated"] is True
    assert cases["e2e-faq-refund-time"]["lane"] == "faq"
    assert summary["tokens"] > 0  # the FAQ answer at least (the answer cache starts empty)
