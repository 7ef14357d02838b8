"""The golden set (tests/golden/*.jsonl) and the router exemplars
(support/data/router_exemplars.jsonl) are data the evaluator and the router read; these tests keep
their format honest.

The golden format is fixed (the evaluator implements it exactly): one JSON object per line,
{"id", "customer", "messages", "expect": {"lane", "facts", "absent", "refund", "escalated"}},
every key of "expect" optional. Nothing here imports `support`: the files are checked as data,
so a change to the pipeline can never make its own yardstick pass.
"""

from __future__ import annotations

import difflib
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.demo import SCENARIO_EMAILS

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
EXEMPLARS = ROOT / "support" / "data" / "router_exemplars.jsonl"
HELPCENTER_DIR = ROOT / "memory" / "helpcenter"

LANES = {"faq", "refund", "agent"}
CURRENCIES = {"USD", "EUR", "GBP"}
CASE_KEYS = {"id", "customer", "messages", "expect"}
EXPECT_KEYS = {"lane", "facts", "absent", "refund", "escalated"}
REFUND_KEYS = {"amount", "currency", "auto_approved"}
AMOUNT = re.compile(r"\d+\.\d{2}")
# A money fact is written as the reply shows money: symbol, thousands commas, optional cents.
MONEY_FACT = re.compile(r"[$€£]\d{1,3}(,\d{3})*(\.\d{2})?")
# POLICY.md: only duplicate-charge refunds of 25.00 or less are approved automatically.
AUTO_APPROVE_LIMIT = Decimal("25.00")
MIN_CASES = 150
MIN_EXEMPLARS = 100


def _read_jsonl(path: Path) -> list[tuple[str, int, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        rows.append((path.name, number, json.loads(line)))
    return rows


def golden_rows() -> list[tuple[str, int, Any]]:
    return [row for path in sorted(GOLDEN_DIR.glob("*.jsonl")) for row in _read_jsonl(path)]


def golden_cases() -> list[dict[str, Any]]:
    return [case for _, _, case in golden_rows()]


def exemplars() -> list[dict[str, Any]]:
    return [row for _, _, row in _read_jsonl(EXEMPLARS)]


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) and s.strip() for s in value)


def _fact_problems(facts: list[str]) -> list[str]:
    problems = []
    for fact in facts:
        if len(fact.split()) > 4 or fact.rstrip().endswith("."):
            problems.append(f"fact {fact!r} reads like a sentence; facts are short")
        if fact[:1] in "$€£" and not MONEY_FACT.fullmatch(fact):
            problems.append(f"money fact {fact!r} is not written like '$1,990.00'")
    return problems


def _refund_problems(refund: object) -> list[str]:
    if refund is None:
        return []
    if not isinstance(refund, dict) or set(refund) != REFUND_KEYS:
        return [f"refund must be null or have exactly {sorted(REFUND_KEYS)}"]
    problems = []
    amount = refund["amount"]
    if not isinstance(amount, str) or not AMOUNT.fullmatch(amount):
        problems.append(f"refund amount {amount!r} is not a 2-decimal string")
    elif Decimal(amount) <= 0:
        problems.append("refund amount must be positive")
    elif refund["auto_approved"] is True and Decimal(amount) > AUTO_APPROVE_LIMIT:
        problems.append(f"auto-approved refund of {amount} is above the policy limit")
    if refund["currency"] not in CURRENCIES:
        problems.append(f"refund currency {refund['currency']!r} is not one of {CURRENCIES}")
    if not isinstance(refund["auto_approved"], bool):
        problems.append("refund auto_approved must be a bool")
    return problems


def case_problems(case: object) -> list[str]:
    """Everything wrong with one golden case, as readable strings (empty when valid)."""
    if not isinstance(case, dict):
        return ["a case must be a JSON object"]
    if set(case) != CASE_KEYS:
        return [f"case keys must be exactly {sorted(CASE_KEYS)}, got {sorted(case)}"]
    problems = []
    if not isinstance(case["id"], str) or not case["id"].strip():
        problems.append("id must be a non-empty string")
    if case["customer"] is not None and case["customer"] not in SCENARIO_EMAILS:
        problems.append(f"customer {case['customer']!r} is neither null nor a SCENARIOS.md email")
    if not _is_str_list(case["messages"]) or not case["messages"]:
        problems.append("messages must be a non-empty list of non-empty strings")
    expect = case["expect"]
    if not isinstance(expect, dict) or not set(expect) <= EXPECT_KEYS:
        return [*problems, f"expect keys must be a subset of {sorted(EXPECT_KEYS)}"]
    if "lane" in expect and expect["lane"] not in LANES:
        problems.append(f"lane {expect['lane']!r} is not one of {sorted(LANES)}")
    for key in ("facts", "absent"):
        if key in expect and not _is_str_list(expect[key]):
            problems.append(f"{key} must be a list of non-empty strings")
    if _is_str_list(expect.get("facts", [])):
        problems += _fact_problems(expect.get("facts", []))
        both = {f.lower() for f in expect.get("facts", [])} & {
            a.lower() for a in expect.get("absent", []) if isinstance(a, str)
        }
        if both:
            problems.append(f"{sorted(both)} both required and forbidden")
    if "refund" in expect:
        problems += _refund_problems(expect["refund"])
    if "escalated" in expect and not isinstance(expect["escalated"], bool):
        problems.append("escalated must be a bool")
    return problems


def _as_graded(text: str) -> str:
    """Text as the evaluator matches facts: case-folded, dashes as "-", whitespace collapsed."""
    return " ".join(text.lower().replace("\u2013", "-").replace("\u2014", "-").split())


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def near_verbatim(text: str, other: str) -> bool:
    """Whether `text` is `other` or a light edit of it (or is quoted inside it)."""
    a, b = _normal(text), _normal(other)
    a_words, b_words = set(a.split()), set(b.split())
    if len(a.split()) >= 3 and f" {a} " in f" {b} ":
        return True
    if min(len(a_words), len(b_words)) >= 4:
        overlap = len(a_words & b_words) / len(a_words | b_words)
        if overlap >= 0.7:
            return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.real_quick_ratio() >= 0.8 and matcher.ratio() >= 0.8


# --- the golden set ---------------------------------------------------------------------------


def test_every_golden_line_is_a_json_object():
    rows = golden_rows()

    assert rows, "no tests/golden/*.jsonl files"
    assert all(isinstance(case, dict) for _, _, case in rows)


@pytest.mark.parametrize(
    ("where", "case"), [(f"{name}:{line}", case) for name, line, case in golden_rows()]
)
def test_golden_case_follows_the_format(where, case):
    assert case_problems(case) == [], where


def test_golden_ids_are_unique():
    ids = [case["id"] for case in golden_cases()]

    assert sorted(i for i in set(ids) if ids.count(i) > 1) == []


def test_golden_set_is_big_enough():
    assert len(golden_cases()) >= MIN_CASES


def test_every_lane_is_expected_somewhere():
    lanes = {case["expect"].get("lane") for case in golden_cases()}

    assert lanes >= LANES


def test_every_scenario_customer_appears():
    customers = {case["customer"] for case in golden_cases()}

    assert set(SCENARIO_EMAILS) - customers == set()


def test_every_scenario_customer_asks_for_a_refund_at_least_twice():
    refund_asks = [
        case["customer"] for case in golden_cases() if case["expect"].get("lane") == "refund"
    ]

    assert {email for email in SCENARIO_EMAILS if refund_asks.count(email) < 2} == set()


def test_faq_facts_come_from_the_help_center():
    # An FAQ answer is grounded in the help center, so every fact it must state is written there.
    articles = _as_graded(
        " ".join(p.read_text(encoding="utf-8") for p in HELPCENTER_DIR.glob("*.md"))
    )
    ungrounded = [
        (case["id"], fact)
        for case in golden_cases()
        if case["expect"].get("lane") == "faq"
        for fact in case["expect"].get("facts", [])
        if _as_graded(fact) not in articles
    ]

    assert ungrounded == []


_VALID: dict[str, object] = {"id": "x", "customer": None, "messages": ["hi"], "expect": {}}


def _expecting(**expect: object) -> dict[str, object]:
    return {**_VALID, "expect": expect}


def _refund(amount: object, currency: str = "USD", auto: object = False) -> dict[str, object]:
    return _expecting(refund={"amount": amount, "currency": currency, "auto_approved": auto})


@pytest.mark.parametrize(
    "bad",
    [
        {key: value for key, value in _VALID.items() if key != "expect"},
        {**_VALID, "extra": 1},
        {**_VALID, "customer": "mallory@example.com"},
        {**_VALID, "messages": []},
        _expecting(lane="complex"),
        _expecting(facts="$49.00"),
        _expecting(facts=["Your refund of the duplicate charge is on its way."]),
        _expecting(facts=["$1990.00"]),
        _expecting(facts=["$49.00"], absent=["$49.00"]),
        _refund(49),
        _refund("49.0"),
        _refund("49.00", currency="usd"),
        _refund("49.00", auto=True),
        _refund("19.00", auto="yes"),
        _expecting(escalated="yes"),
    ],
)
def test_format_check_rejects_a_malformed_case(bad):
    assert case_problems(bad) != []


# --- the router exemplars ---------------------------------------------------------------------


def test_every_exemplar_is_a_labelled_text():
    rows = exemplars()

    assert [r for r in rows if set(r) != {"text", "lane"}] == []
    assert [r for r in rows if not isinstance(r["text"], str) or not r["text"].strip()] == []
    assert [r for r in rows if r["lane"] not in LANES] == []


def test_exemplars_are_enough_and_balanced_across_lanes():
    lanes = [row["lane"] for row in exemplars()]

    assert len(lanes) >= MIN_EXEMPLARS
    assert min(lanes.count(lane) for lane in LANES) >= len(lanes) // 4


def test_exemplar_texts_are_unique():
    texts = [_normal(row["text"]) for row in exemplars()]

    assert sorted(t for t in set(texts) if texts.count(t) > 1) == []


def test_no_exemplar_copies_a_golden_message():
    messages = [m for case in golden_cases() for m in case["messages"]]
    copies = [
        (row["text"], message)
        for row in exemplars()
        for message in messages
        if near_verbatim(row["text"], message)
    ]

    assert copies == []


@pytest.mark.parametrize(
    ("text", "other"),
    [
        ("how do i cancel my subscription", "how do i cancel my subscription"),
        ("How do I cancel my subscription?", "how do i cancel my subscripton"),
        ("refund my annual plan", "hi there, please refund my annual plan, thanks"),
        ("what cards do you accept for payment", "which cards do you accept for payment"),
    ],
)
def test_near_verbatim_catches_copies_and_light_edits(text, other):
    assert near_verbatim(text, other)


def test_near_verbatim_lets_a_different_wording_through():
    assert not near_verbatim(
        "is there a way to stop my plan renewing", "how do i cancel my subscription"
    )
