"""`manage.py release`: make, start, promote and roll back releases (support/releases.py).

    manage.py release list
    manage.py release show NAME                       # pins, state, the figures against current
    manage.py release create NAME [--prompt faq_answer=2 ...] [--model small=claude-... ...]
    manage.py release start NAME --shadow             # a sample of tickets (RELEASE_SHADOW_SAMPLE)
    manage.py release start NAME --canary 0.05        # 5% of customers
    manage.py release promote NAME
    manage.py release rollback NAME --reason "..."    # at once: no new ticket goes to it
    manage.py release check                           # what beat's check would decide now

`--actor` names who acts (default: the OS user), recorded on the release.
"""

from __future__ import annotations

import getpass
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from support import releases
from support.models import CANDIDATE_STATES, Release


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise CommandError(f"--{what} takes NAME=VALUE, got {value!r}", returncode=2)
        pairs[key.strip()] = item.strip()
    return pairs


class Command(BaseCommand):
    help = "Make, start (shadow or canary), promote and roll back releases."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--actor", default="", help="who acts (default: the OS user)")
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="every release, newest first")
        show = sub.add_parser("show", help="one release, with its figures against the current")
        show.add_argument("name")
        create = sub.add_parser("create", help="a draft from the current release's pins")
        create.add_argument("name")
        create.add_argument("--prompt", action="append", help="NAME=VERSION (repeatable)")
        create.add_argument("--model", action="append", help="TIER=MODEL_ID (repeatable)")
        create.add_argument("--notes", default="")
        start = sub.add_parser("start", help="start a draft as the candidate")
        start.add_argument("name")
        mode = start.add_mutually_exclusive_group(required=True)
        mode.add_argument("--shadow", action="store_true", help="shadow a sample of tickets")
        mode.add_argument("--canary", metavar="SHARE", help="answer this share of customers")
        promote = sub.add_parser("promote", help="make it the current release")
        promote.add_argument("name")
        rollback = sub.add_parser("rollback", help="stop a candidate at once")
        rollback.add_argument("name")
        rollback.add_argument("--reason", required=True)
        sub.add_parser("check", help="compare the candidate with the current release now")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = options["actor"] or f"staff:{getpass.getuser()}"
        try:
            getattr(self, f"_{options['action']}")(options, actor)
        except releases.ReleaseError as exc:
            raise CommandError(str(exc), returncode=2) from exc

    def _line(self, release: Release) -> str:
        share = f" share {release.share}" if release.state == "canary" else ""
        return (
            f"{release.name:<16} {release.state:<12}{share} prompts {release.prompt_versions} "
            f"models {release.model_ids}"
        )

    def _list(self, options: dict[str, Any], actor: str) -> None:
        releases.release_current()  # seeds r1 on an empty database
        for release in releases.releases_list():
            self.stdout.write(self._line(release))

    def _show(self, options: dict[str, Any], actor: str) -> None:
        release = releases.release_get(name=options["name"])
        self.stdout.write(self._line(release))
        if release.rolled_back_at:
            self.stdout.write(
                f"rolled back {release.rolled_back_at:%Y-%m-%d %H:%M:%S} by "
                f"{release.rolled_back_by}: {release.rollback_reason}"
            )
        if release.state in CANDIDATE_STATES:
            verdict = releases.release_compare(candidate=release)
            self.stdout.write(json.dumps(verdict.as_dict(), indent=2))

    def _create(self, options: dict[str, Any], actor: str) -> None:
        prompts: dict[str, Any] = _pairs(options["prompt"], "prompt")
        release = releases.release_create(
            name=options["name"],
            actor=actor,
            prompt_versions=prompts,
            model_ids=_pairs(options["model"], "model"),
            notes=options["notes"],
        )
        self.stdout.write(f"created {self._line(release)}")

    def _start(self, options: dict[str, Any], actor: str) -> None:
        release = releases.release_get(name=options["name"])
        share: Decimal | None = None
        if options["canary"] is not None:
            try:
                share = Decimal(options["canary"])
            except InvalidOperation as exc:
                raise CommandError("--canary takes a share like 0.05", returncode=2) from exc
        release = releases.release_start(
            release=release,
            mode="canary" if share is not None else "shadow",
            share=share,
            actor=actor,
        )
        self.stdout.write(f"started {self._line(release)}")

    def _promote(self, options: dict[str, Any], actor: str) -> None:
        release = releases.release_promote(
            release=releases.release_get(name=options["name"]), actor=actor
        )
        self.stdout.write(f"promoted {self._line(release)}")

    def _rollback(self, options: dict[str, Any], actor: str) -> None:
        release = releases.release_get(name=options["name"])
        if not releases.release_rollback(release=release, actor=actor, reason=options["reason"]):
            raise CommandError(f"release {release.name!r} is {release.state}: no candidate", 2)
        self.stdout.write(f"rolled back {self._line(release)}")

    def _check(self, options: dict[str, Any], actor: str) -> None:
        self.stdout.write(json.dumps(releases.releases_check(), indent=2, default=str))
