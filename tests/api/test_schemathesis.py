"""Schemathesis against the OpenAPI schema, in process (WSGI), with a valid key of each scope:
no generated request gets a 5xx, and every response matches the schema (the uniform error body
included). At least 1,000 generated cases in all; the count is printed and written to
test-artifacts/schemathesis.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from support.apikeys import api_key_create
from tests.billing import factories

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_OPERATION = 33
MIN_CASES = 1000
CASES: dict[str, int] = {}

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())

pytestmark = [pytest.mark.slow]


@pytest.fixture
def keys(transactional_db, redis_client, settings_for_fuzzing) -> dict[str, str]:
    from django.contrib.auth.models import Permission, User

    owner = User.objects.create_user("fuzz-staff", password="x-not-used-x", is_staff=True)
    owner.user_permissions.add(Permission.objects.get(codename="decide_refundrequest"))
    customer = factories.customer()
    tickets = api_key_create(name="fuzz", scopes=["tickets"], owner=owner, customer=customer)
    staff = api_key_create(name="fuzz", scopes=["staff"], owner=owner)
    return {"tickets": tickets.plaintext, "staff": staff.plaintext}


@pytest.fixture
def settings_for_fuzzing(settings):
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 1_000_000
    settings.API_RATE_LIMIT_PER_CUSTOMER_PER_MINUTE = 1_000_000
    settings.API_SSE_MAX_SECONDS = 0.05
    return settings


# Re-ingesting the help center embeds every article again after a prune: a few cases do.
INGEST = "/api/v1/helpcenter/ingest"
SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "derandomize": True,
}


def _call(case, keys: dict[str, str]) -> None:
    scope = case.operation.definition.raw["x-required-scope"]
    CASES[case.operation.label] = CASES.get(case.operation.label, 0) + 1
    case.call_and_validate(
        headers={"Authorization": f"Bearer {keys[scope]}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


@schema.exclude(path=INGEST).parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, **SETTINGS)
def test_no_server_error_and_responses_match_the_schema(case, keys):
    _call(case, keys)


@schema.include(path=INGEST).parametrize()
@settings(max_examples=3, phases=[Phase.generate], **SETTINGS)
def test_ingest_no_server_error_and_responses_match_the_schema(case, keys):
    _call(case, keys)


def test_zz_enough_cases_were_generated():
    total = sum(CASES.values())
    report = {"cases": total, "operations": len(CASES), "per_operation": CASES}
    out = ROOT / "test-artifacts" / "schemathesis.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"\nschemathesis: {total} generated cases over {len(CASES)} operations")
    assert len(CASES) == len(list(schema.get_all_operations()))
    assert total >= MIN_CASES
