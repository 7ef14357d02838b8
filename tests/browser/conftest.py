"""Browser tests: Debian's chromium driven by playwright against the whole stack (uvicorn, a real
Celery worker and beat) on the run's own Postgres and Redis, with the demo world seeded.

One stack and one browser per module (starting them takes seconds); each test gets its own
browser context (cookies, storage), so sign-ins never leak between tests.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.core.management import call_command

from ledgerly.testing.stack import LiveStack

ROOT = Path(__file__).resolve().parent.parent.parent
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# Model calls take a little while, as a real model's do, so a streamed answer arrives in pieces.
STACK_ENV = {"LLM_SIMULATOR_LATENCY_MEDIAN_MS": "700", "LLM_SIMULATOR_LATENCY_SIGMA": "0.2"}


@pytest.fixture(scope="module")
def live_stack(django_db_setup, django_db_blocker) -> Iterator[LiveStack]:
    """The demo world seeded and committed in the test database, and web + worker + beat
    serving it. Tests here are transactional (the servers are other processes), so Django's
    per-test flush is skipped while the module runs; the database is flushed after it."""
    from django.db import connection
    from django.test import TransactionTestCase

    from ledgerly.testing.worker import database_url_for

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransactionTestCase, "_fixture_teardown", lambda self: None)
        with django_db_blocker.unblock():
            call_command("seed_demo", verbosity=0)
            call_command("ingest_helpcenter", verbosity=0)
            call_command("seed_router_exemplars", verbosity=0)
            url = database_url_for(connection.settings_dict)
        # Once, before the servers start: flushing under a running worker would drop the
        # broker's queue bindings.
        client = redis_lib.Redis.from_url(settings.REDIS_URL)
        client.flushdb()
        client.close()
        stack = LiveStack(database_url=url, env=STACK_ENV).start()
        try:
            yield stack
        finally:
            stack.stop()
    with django_db_blocker.unblock():
        call_command("flush", verbosity=0, interactive=False)


@pytest.fixture
def db_rows(live_stack, transactional_db) -> None:
    """The ORM in a test beside the live stack: what the servers committed, read directly."""


@pytest.fixture(scope="module")
def browser(live_stack) -> Iterator[Any]:
    """One headless chromium for the module, its profile, HOME and XDG dirs in a temp dir."""
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="ledgerly-chromium-"))
    env: dict[str, str | float | bool] = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API runs an event loop under the test; Django's ORM, called from a
        # test between two page actions, would take that for an async context and refuse.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env)
            yield chromium
            chromium.close()


def open_page(browser: Any, live_stack: LiveStack, viewport: dict[str, int]) -> Any:
    """A page in a new browser context (own cookies), with `page.js_errors` (uncaught errors in
    the page) and `page.a11y` (what check_accessible found). Close it with page.context.close()."""
    context = browser.new_context(base_url=live_stack.url, viewport=viewport, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    page.a11y = {}
    return page


def _new_page(browser: Any, live_stack: LiveStack, viewport: dict[str, int]) -> Iterator[Any]:
    page = open_page(browser, live_stack, viewport)
    yield page
    page.context.close()


@pytest.fixture
def page(browser, live_stack) -> Iterator[Any]:
    """A fresh desktop-sized browser context and page (own cookies)."""
    yield from _new_page(browser, live_stack, DESKTOP)


@pytest.fixture
def phone_page(browser, live_stack) -> Iterator[Any]:
    """A fresh phone-sized browser context and page."""
    yield from _new_page(browser, live_stack, PHONE)


def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core (vendored) on the page as it is now: the serious and critical violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
            "why": v["nodes"][0].get("failureSummary", "")[:300] if v["nodes"] else "",
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_accessible(page: Any, name: str) -> None:
    """Run axe on the page and keep its serious/critical violations under `name` on the page
    (`page.a11y`); the test asserts none at its end, so one finding does not hide the next."""
    violations = axe_violations(page)
    if violations:
        page.a11y[name] = violations


def assert_accessible(page: Any) -> None:
    """No serious or critical axe violation on any page the test checked."""
    lines = [
        f"{name}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}: {v['why']!r}"
        for name, found in page.a11y.items()
        for v in found
    ]
    assert lines == [], "axe-core found:\n" + "\n".join(lines)
