"""`manage.py create_api_key NAME --scope tickets|staff [--customer EMAIL] [--owner USERNAME]
[--expires-days N]`: make a REST API key and print it once (only its hash is kept)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import selectors as billing_selectors
from support.apikeys import ApiKeyError, api_key_create
from support.models import ApiScope


class Command(BaseCommand):
    help = "Create a REST API key and print it once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--scope", action="append", required=True, choices=ApiScope.values, dest="scopes"
        )
        parser.add_argument("--customer", help="bind the key to this customer (email)")
        parser.add_argument(
            "--owner",
            help="the user the key acts as (default: the customer's own sign-in, if linked); "
            "a staff key's owner must be staff",
        )
        parser.add_argument("--expires-days", type=int, help="valid for N days (default: no end)")

    def handle(self, *args: Any, **options: Any) -> None:
        customer = None
        if options["customer"]:
            customer = billing_selectors.customer_get_by_email(email=options["customer"])
            if customer is None:
                raise CommandError(f"no customer with email {options['customer']!r}")
        owner: User | None
        if options["owner"]:
            owner = User.objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no user {options['owner']!r}")
        else:
            owner = customer.user if customer is not None else None
            if owner is None:
                raise CommandError("--owner USERNAME is required (no customer sign-in to own it)")
        if ApiScope.STAFF in options["scopes"] and not (owner.is_active and owner.is_staff):
            raise CommandError(f"a staff key's owner must be active staff; {owner} is not")
        expires_at = None
        if options["expires_days"] is not None:
            if options["expires_days"] < 1:
                raise CommandError("--expires-days must be 1 or more")
            expires_at = timezone.now() + dt.timedelta(days=options["expires_days"])
        try:
            issued = api_key_create(
                name=options["name"],
                scopes=options["scopes"],
                owner=owner,
                customer=customer,
                expires_at=expires_at,
            )
        except ApiKeyError as exc:
            raise CommandError(str(exc)) from exc
        key = issued.api_key
        self.stderr.write(
            f"Created key {key.prefix} ({key.name}): scopes {', '.join(key.scopes)}, owner "
            f"{owner.get_username()}"
            + (f", bound to {customer.email}" if customer else ", not bound to a customer")
            + (f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "")
            + ". It is shown once; store it now:"
        )
        self.stdout.write(issued.plaintext)
