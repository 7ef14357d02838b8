"""`manage.py release` and `manage.py evaluate --release/--compare`'s pieces."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from support import evaluation, releases
from support.models import Release, ReleaseState


def release(*args: str) -> str:
    out = StringIO()
    call_command("release", "--actor", "staff:ops", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.usefixtures("no_releases")
def test_staff_make_start_and_roll_back_a_release_from_the_command_line():
    assert "r1" in release("list")
    release("create", "r2", "--model", "small=claude-sonnet-5-5", "--prompt", "faq_answer=1")
    assert Release.objects.get(name="r2").model_ids["small"] == "claude-sonnet-5-5"
    assert "share 0.0500" in release("start", "r2", "--canary", "0.05")
    assert "fewer than the minimum" in release("show", "r2")

    release("rollback", "r2", "--reason", "replies too long")

    r2 = Release.objects.get(name="r2")
    assert (r2.state, r2.rolled_back_by, r2.rollback_reason) == (
        ReleaseState.ROLLED_BACK,
        "staff:ops",
        "replies too long",
    )
    assert releases.release_for_customer(customer_ref="cus_any").name == "r1"


@pytest.mark.django_db
@pytest.mark.usefixtures("no_releases")
@pytest.mark.parametrize(
    "args",
    [
        ("create", "r2", "--model", "small"),  # not TIER=MODEL
        ("create", "r2", "--prompt", "faq_answer=9"),  # no such version
        ("start", "nope", "--shadow"),
        ("start", "r1", "--canary", "lots"),
        ("rollback", "r1", "--reason", "not a candidate"),
    ],
)
def test_bad_release_commands_are_refused_plainly(args):
    with pytest.raises(CommandError) as error:
        release(*args)
    assert error.value.returncode == 2


@pytest.mark.parametrize(
    ("value", "name", "models"),
    [
        ("r1", "r1", {}),
        (
            '{"name": "r2", "model_ids": {"small": "claude-sonnet-5-5"}}',
            "r2",
            {"small": "claude-sonnet-5-5"},
        ),
    ],
)
def test_a_release_to_evaluate_is_named_or_given_as_json(value, name, models):
    spec = evaluation.release_spec(value)
    assert (spec.name, spec.model_ids) == (name, models)


def test_a_release_file_is_read(tmp_path):
    path = tmp_path / "r3.json"
    path.write_text(json.dumps({"name": "r3", "prompt_versions": {"faq_answer": "1"}}))
    assert evaluation.release_spec(str(path)).prompt_versions == {"faq_answer": 1}


@pytest.mark.parametrize(
    "value", ["{not json", '{"model_ids": {}}', '{"name": "x", "model_ids": []}']
)
def test_a_malformed_release_spec_is_refused(value):
    with pytest.raises(evaluation.ReleaseSpecError):
        evaluation.release_spec(value)


def _report(pass_rate: float, cost: float, passes: dict[str, int]) -> dict[str, Any]:
    lane = {"tickets": 2, "pass_rate": pass_rate, "cost_usd_p50": cost, "latency_s_p50": 1.0,
            "latency_s_p95": 2.0 + cost}  # fmt: skip
    summary: dict[str, Any] = {key: 0 for key in evaluation.COMPARED}
    summary.update(
        pass_rate=pass_rate, cost_per_ticket_usd=cost, passes=passes, lanes={"faq": lane}
    )
    return {"summary": summary, "cases": []}


def test_two_reports_are_compared_figure_by_figure_and_case_by_case():
    a = _report(1.0, 0.001, {"faq-1": 1, "faq-2": 1})
    b = _report(0.5, 0.004, {"faq-1": 1, "faq-2": 0})

    differences = evaluation.compare_reports(a, b)

    assert differences["figures"]["pass_rate"] == {"a": 1.0, "b": 0.5, "delta": -0.5}
    assert differences["figures"]["cost_per_ticket_usd"]["delta"] == pytest.approx(0.003)
    assert differences["cases"] == [{"id": "faq-2", "a": 1, "b": 0}]
    assert differences["lanes"]["faq"]["latency_s_p95"] == {"a": 2.001, "b": 2.004}
    text = evaluation.format_comparison(("r1", "r2"), differences)
    assert "faq-2: 1 -> 0" in text
    assert "pass_rate" in text
