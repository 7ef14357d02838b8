"""The three journeys of issue 8 in a real browser (Debian chromium) against the whole stack:
uvicorn, a real Celery worker and beat, the run's Postgres and Redis, the offline simulator
answering with a model's latency.

- a demo customer signs in, asks an FAQ question and watches the answer stream in, cited;
- ana asks about her double charge, sees that a staff member must approve the $49.00, a staff
  member approves it in the staff pages, and ana's open chat shows the refund done, with exactly
  one Refund recorded;
- the chat by keyboard alone; the chat and the staff queue on a phone-sized screen.

Every page visited passes axe-core (vendored) without serious or critical violations, and each
is saved as test-artifacts/screenshots/<name>.png.
"""

from __future__ import annotations

import itertools
import re
from decimal import Decimal
from typing import Any

import pytest

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    assert_accessible,
    check_accessible,
    open_page,
    screenshot,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ANA = "ana.lopez@example.com"
ANSWER_TIMEOUT_MS = 60_000  # a busy machine; the simulator's answers take about a second


def sign_in(page: Any, email: str, *, shot: str | None = None) -> None:
    page.goto("/")
    assert "/signin/" in page.url  # the chat sends an anonymous visitor to sign in
    if shot:
        screenshot(page, shot)
        check_accessible(page, shot)
    page.click(f"[data-testid=demo-signin][data-email='{email}']")
    page.wait_for_selector("[data-testid=signed-in-as]")


def assistant_messages(page: Any) -> Any:
    return page.locator("[data-testid=message][data-role=assistant] [data-testid=message-text]")


def record_drafts(page: Any) -> None:
    """Remember every text the draft shows as the answer streams in (before it is replaced)."""
    page.evaluate(
        """() => {
            window.__drafts = [];
            const text = document.querySelector('[data-testid=draft-text]');
            new MutationObserver(() => window.__drafts.push(text.textContent))
                .observe(text, {childList: true, characterData: true, subtree: true});
        }"""
    )


def staff_sign_in(page: Any) -> None:
    page.goto("/staff/")
    page.fill("[data-testid=login-username]", "staff")
    page.fill("[data-testid=login-password]", "ledgerly-demo")
    page.click("[data-testid=login-submit]")
    page.wait_for_selector("[data-testid=nav-approvals]")


def no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page is {overflow}px wider than the screen"


def chart_text_px(page: Any) -> list[float]:
    """The size on screen of each chart shown (its text's font size times the SVG's scale)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.chart svg')]
            .filter(svg => svg.getBoundingClientRect().width > 0)
            .map(svg => {
                const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                const text = svg.querySelector('text');
                return parseFloat(getComputedStyle(text).fontSize) * scale;
            })"""
    )


def test_a_customer_sees_an_faq_answer_streamed_with_its_sources(page, live_stack, db_rows):
    sign_in(page, "jonas.berg@example.com", shot="chat-signin")
    screenshot(page, "chat-new-conversation")
    check_accessible(page, "chat-new-conversation")
    record_drafts(page)

    page.fill("#chat-input", "How do I download an invoice as a PDF?")
    page.click("#chat-send")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=chat-status]').textContent.trim() !== ''",
        timeout=10_000,
    )
    answer = assistant_messages(page).first
    answer.wait_for(timeout=ANSWER_TIMEOUT_MS)

    drafts = [d for d in page.evaluate("() => window.__drafts") if d]
    final = answer.inner_text()
    # Token by token: the draft grew through several lengths before the checked reply replaced
    # it, each a beginning of the one before the next.
    assert len(set(drafts)) >= 3, drafts
    assert all(b.startswith(a[: len(a) // 2]) for a, b in itertools.pairwise(drafts))
    assert "PDF" in final or "pdf" in final.lower()
    assert page.locator("[data-testid=chat-draft]").is_hidden()
    sources = page.locator("[data-testid=source-link]")
    assert sources.count() >= 1
    href = sources.first.get_attribute("href")
    assert re.fullmatch(r"/help/[\w-]+/", href or ""), href
    assert page.locator("[data-testid=talk-to-human]").is_visible()
    assert page.locator("[data-testid=model-backend]").inner_text().startswith("Answers by:")
    screenshot(page, "chat-faq-answer")
    check_accessible(page, "chat-faq-answer")

    sources.first.click()
    page.wait_for_url(f"**{href}")
    assert page.locator("[data-testid=article-title]").inner_text()
    screenshot(page, "help-article")
    check_accessible(page, "help-article")
    assert page.js_errors == []
    assert_accessible(page)


def test_ana_double_charge_approved_by_staff_is_refunded_once(page, browser, live_stack, db_rows):
    from billing.models import Refund, RefundRequest

    sign_in(page, ANA)
    page.fill("#chat-input", "I was charged twice for this month's invoice. Can I get a refund?")
    page.click("#chat-send")
    status = page.locator("[data-testid=chat-status]")
    status.filter(has_text="Waiting for a staff member to approve a $49.00 refund").wait_for(
        timeout=ANSWER_TIMEOUT_MS
    )
    screenshot(page, "chat-refund-waiting")
    check_accessible(page, "chat-refund-waiting")
    request = RefundRequest.objects.get(customer__email=ANA, state="proposed")
    assert request.amount == Decimal("49.00")

    staff = open_page(browser, live_stack, DESKTOP)
    try:
        staff_sign_in(staff)
        staff.click("[data-testid=nav-approvals]")
        staff.wait_for_selector(f"[data-testid=refund-request-row-{request.pk}]")
        screenshot(staff, "staff-approval-queue")
        check_accessible(staff, "staff-approval-queue")
        staff.click(f"[data-testid=refund-request-link-{request.pk}]")
        assert staff.locator("[data-testid=refund-amount]").inner_text() == "$49.00"
        assert "ana.lopez@example.com" in staff.locator("[data-testid=fact-customer]").inner_text()
        assert staff.locator("[data-testid=fact-charge]").inner_text() == "ch_demo_ana_2"
        screenshot(staff, "staff-approval")
        check_accessible(staff, "staff-approval")
        staff.fill("[data-testid=approve-note]", "Duplicate charge confirmed.")
        staff.click("[data-testid=approve-button]")
        staff.wait_for_selector("[data-testid=flash]")
        screenshot(staff, "staff-approval-decided")
        page.a11y.update(staff.a11y)
    finally:
        staff.context.close()

    # Ana's open chat learns it without a reload (the worker executes, billing announces).
    assistant_messages(page).filter(has_text="has been issued").wait_for(timeout=ANSWER_TIMEOUT_MS)
    done = assistant_messages(page).filter(has_text="has been issued").inner_text()
    assert "$49.00" in done
    screenshot(page, "chat-refund-done")
    check_accessible(page, "chat-refund-done")
    request.refresh_from_db()
    assert request.state == "executed"
    assert Refund.objects.filter(charge__ref="ch_demo_ana_2").count() == 1
    assert Refund.objects.filter(charge__customer__email=ANA).count() == 1
    assert page.js_errors == []
    assert_accessible(page)


STAFF_PAGES = [
    ("staff-home", "/staff/"),
    ("staff-approvals-history", "/staff/approvals/history/"),
    ("staff-escalations", "/staff/escalations/"),
    ("staff-dead-letters", "/staff/dead-letters/"),
    ("staff-kill-switches", "/staff/kill-switches/"),
    ("staff-articles", "/staff/articles/"),
    ("staff-article", "/staff/articles/duplicate-charges/"),
    ("staff-operations", "/staff/operations/"),
    ("staff-audit", "/staff/audit/"),
]


def test_every_staff_page_is_accessible(page, live_stack, db_rows):
    page.goto("/staff/login/")
    screenshot(page, "staff-login")
    check_accessible(page, "staff-login")
    staff_sign_in(page)
    for name, path in STAFF_PAGES:
        response = page.goto(path)
        assert response is not None
        assert response.status == 200, path
        if name == "staff-operations":
            sizes = chart_text_px(page)
            assert len(sizes) == 7, sizes  # one layout of each chart
            assert min(sizes) >= 12, sizes
        screenshot(page, name)
        check_accessible(page, name)
    assert page.js_errors == []
    assert_accessible(page)


def tab_to(page: Any, selector: str, *, limit: int = 80) -> None:
    """Press Tab until the focus is on `selector` (fails after `limit` presses)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_the_chat_works_by_keyboard_alone(page, live_stack, db_rows):
    page.goto("/signin/")
    tab_to(page, "[data-testid=demo-signin][data-email='emma.schulz@example.com']")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=signed-in-as]")

    tab_to(page, "#chat-input")
    page.keyboard.type("How do I add team members to my account?")
    page.keyboard.press("Control+Enter")
    assistant_messages(page).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert page.locator("[data-testid=message][data-role=customer]").count() == 1

    # "Talk to a human" and the rating buttons are in the tab order; a rating is sent by Enter.
    page.evaluate("() => document.activeElement.blur()")
    tab_to(page, "[data-testid=talk-to-human]")
    tab_to(page, "[data-testid=rate-yes]")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=rating-saved]", timeout=15_000)
    focus_visible = page.evaluate(
        "() => getComputedStyle(document.activeElement).outlineStyle !== 'none'"
        " || document.activeElement === document.body"
    )
    assert focus_visible
    screenshot(page, "chat-keyboard-rated")
    check_accessible(page, "chat-keyboard-rated")

    # A follow-up by keyboard too: Tab back to the box, type, Tab to Send, Enter.
    tab_to(page, "#chat-input")
    page.keyboard.type("Thanks!")
    tab_to(page, "#chat-send")
    page.keyboard.press("Enter")
    page.locator("[data-testid=message][data-role=customer]").nth(1).wait_for(timeout=15_000)
    assert page.js_errors == []
    assert_accessible(page)


def test_chat_and_staff_queue_fit_a_phone(phone_page, browser, live_stack, db_rows):
    page = phone_page
    sign_in(page, "chloe.martin@example.com")
    no_sideways_scroll(page)
    page.fill("#chat-input", "What payment methods do you accept?")
    page.click("#chat-send")
    assistant_messages(page).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert page.locator("[data-testid=talk-to-human]").is_visible()
    no_sideways_scroll(page)
    screenshot(page, "phone-chat-answer")
    check_accessible(page, "phone-chat-answer")

    page.goto("/signin/")
    screenshot(page, "phone-chat-signin")
    check_accessible(page, "phone-chat-signin")
    no_sideways_scroll(page)

    staff = open_page(browser, live_stack, PHONE)  # staff sign in apart from the customer
    try:
        staff_sign_in(staff)
        staff.goto("/staff/approvals/")
        no_sideways_scroll(staff)
        screenshot(staff, "phone-staff-approvals")
        check_accessible(staff, "phone-staff-approvals")
        staff.goto("/staff/operations/")
        no_sideways_scroll(staff)
        # The charts' stacked layout: labels as legible as the text around them (the wide one
        # drew them at about 6px on this screen).
        sizes = chart_text_px(staff)
        assert len(sizes) == 7, sizes
        assert min(sizes) >= 12, sizes
        screenshot(staff, "phone-staff-operations")
        check_accessible(staff, "phone-staff-operations")
        page.a11y.update(staff.a11y)
        page.js_errors.extend(staff.js_errors)
    finally:
        staff.context.close()
    assert page.js_errors == []
    assert_accessible(page)


def test_the_api_docs_page_is_accessible(page, live_stack, db_rows):
    """django-ninja's Swagger UI, as templates/ninja/swagger.html and ledgerly/api.py set it up:
    served from our own static files, and axe-clean folded, unfolded and ready to try out."""
    origin = live_stack.url.rstrip("/")
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith((origin, "data:")) else elsewhere.append(r.url),
    )
    for path in ("/api/v1/docs", "/api/docs"):
        page.goto(path, timeout=60_000)  # Swagger UI's 1.5 MB bundle, on a busy machine
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.get_attribute("html", "lang") == "en"
        # No link inside an operation's toggle button (deep links off: an <a> without href).
        assert page.locator(".opblock-summary-control a[href]").count() == 0
    screenshot(page, "api-docs")
    check_accessible(page, "api-docs")

    # Every operation unfolded, the first two ready to try out (inputs, selects, the body).
    summaries = page.locator(".opblock-summary-control")
    for i in range(summaries.count()):
        summaries.nth(i).click()
    page.wait_for_function(
        "n => document.querySelectorAll('.opblock.is-open').length === n", arg=summaries.count()
    )
    try_out = page.locator(".btn.try-out__btn")
    for i in range(2):
        try_out.nth(i).click()
    page.locator("textarea.body-param__text").first.wait_for()
    screenshot(page, "api-docs-unfolded")
    check_accessible(page, "api-docs-unfolded")
    assert elsewhere == []  # offline: no CDN, nothing but the stack itself
    assert page.js_errors == []
    assert_accessible(page)
