"""Customer sign-in for the chat: a magic link by email, and the demo sign-in in development.

A customer signs in as the login linked to it (`billing.Customer.user`, a real key). The magic
link carries a signed, timestamped token (django.core.signing.TimestampSigner, salted for this
purpose) naming the user and the user's `last_login` at the time the link was made. It expires
after MAGIC_LINK_MAX_AGE and works once: signing in moves `last_login`, so the token no longer
matches (the same trick as Django's password-reset tokens, with no table to keep).

The demo sign-in lists the SCENARIOS.md customers and is refused unless
settings.DEMO_SIGNIN_ENABLED (always off in production settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.cache import cache
from django.core.mail import send_mail
from django.db.models import Case, IntegerField, Value, When

from billing.demo import SCENARIO_EMAILS
from billing.models import Customer

MAGIC_LINK_MAX_AGE = 15 * 60
# At most one link per address this often: the form must not be a way to flood an inbox.
MAGIC_LINK_EVERY_SECONDS = 60
_SALT = "ledgerly.support.magic-link"


class SignInRefused(Exception):
    """The link is malformed, expired, used, or names no customer's login."""


@dataclass(frozen=True)
class DemoCustomer:
    email: str
    name: str


def customer_for_user(user: object) -> Customer | None:
    """The customer a signed-in user speaks for (None for staff and strangers)."""
    if not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    if pk is None:
        return None
    return Customer.objects.filter(user_id=pk).first()


def demo_customers() -> list[DemoCustomer]:
    """The scenario customers with a linked login, in SCENARIOS.md order."""
    if not settings.DEMO_SIGNIN_ENABLED:
        return []
    order = Case(
        *[When(email=email, then=Value(i)) for i, email in enumerate(SCENARIO_EMAILS)],
        output_field=IntegerField(),
    )
    rows = (
        Customer.objects.filter(email__in=SCENARIO_EMAILS, user__isnull=False)
        .annotate(position=order)
        .order_by("position")
    )
    return [DemoCustomer(email=c.email, name=c.name) for c in rows]


def demo_user(*, email: str) -> User:
    """The login of a demo customer (SignInRefused when the demo sign-in is off or `email` is
    not one of the scenario customers)."""
    if not settings.DEMO_SIGNIN_ENABLED:
        raise SignInRefused("the demo sign-in is off")
    if email not in SCENARIO_EMAILS:
        raise SignInRefused("not a demo customer")
    customer = Customer.objects.select_related("user").filter(email=email).first()
    if customer is None or customer.user is None or not customer.user.is_active:
        raise SignInRefused("this demo customer has no login")
    return customer.user


def _stamp(user: User) -> str:
    return user.last_login.isoformat() if user.last_login else ""


def magic_token(*, user: User) -> str:
    signer = signing.TimestampSigner(salt=_SALT)
    return signer.sign_object({"u": user.pk, "l": _stamp(user)}, compress=True)


def magic_user(*, token: str) -> User:
    """The user a magic-link token signs in, if it is genuine, fresh and unused."""
    signer = signing.TimestampSigner(salt=_SALT)
    try:
        payload = signer.unsign_object(token, max_age=MAGIC_LINK_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise SignInRefused("this sign-in link has expired") from exc
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise SignInRefused("this sign-in link is not valid") from exc
    if not isinstance(payload, dict):
        raise SignInRefused("this sign-in link is not valid")
    pk = payload.get("u")
    if not isinstance(pk, int):
        raise SignInRefused("this sign-in link is not valid")
    user = User.objects.filter(pk=pk, is_active=True).first()
    if user is None or customer_for_user(user) is None:
        raise SignInRefused("this sign-in link is not valid")
    if payload.get("l") != _stamp(user):
        raise SignInRefused("this sign-in link has already been used")
    return user


def magic_link_send(*, email: str, link_for: object) -> bool:
    """Email a sign-in link to the customer whose login has `email` (case-insensitive), at most
    one per MAGIC_LINK_EVERY_SECONDS. Says nothing to the caller about who exists: True only
    tells tests a mail went out.
    `link_for(token) -> absolute URL`."""
    customer = (
        Customer.objects.select_related("user")
        .filter(user__isnull=False, user__is_active=True, email__iexact=email.strip())
        .first()
    )
    if customer is None or customer.user is None:
        return False
    if not cache.add(f"support:magic-link:{customer.pk}", 1, timeout=MAGIC_LINK_EVERY_SECONDS):
        return False  # one was sent a moment ago; it is still good
    url = link_for(magic_token(user=customer.user))  # type: ignore[operator]
    minutes = MAGIC_LINK_MAX_AGE // 60
    send_mail(
        subject="Your Ledgerly support sign-in link",
        message=(
            f"Hello {customer.name},\n\nOpen this link to sign in to Ledgerly support:\n\n{url}\n\n"
            f"It works once and expires in {minutes} minutes. If you did not ask for it, you can "
            "ignore this email.\n"
        ),
        from_email=None,
        recipient_list=[customer.email],
    )
    return True
