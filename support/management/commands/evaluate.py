"""`manage.py evaluate FILE [FILE ...] [--repeat K] [--baseline] [--json] [--release A
[--compare B]]`: score the support pipeline on golden cases (support/evaluation.py), graded by
what each ticket ended as; under release A (its prompt versions and model ids), and with
`--compare B` under B as well, printing both summaries and their differences.

FILE is a .jsonl file, a glob or a directory of *.jsonl. The command needs nothing running:
where DATABASE_URL or REDIS_URL is not configured (or LEDGERLY_EVAL_PRIVATE_SERVICES=1 asks for
it) it starts a private, throwaway Postgres+pgvector and Redis and runs itself again against
them in a child process (Django has read its settings by the time a command runs, so the
servers must exist before a fresh process starts). Either way the cases run in a scratch
database created, seeded and dropped by the evaluation; the configured database is never
written. Exits 1 when a figure is below its EVAL_MIN_* setting, 2 on a malformed golden file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from support import evaluation

PRIVATE_FLAG = "LEDGERLY_EVAL_PRIVATE_SERVICES"  # "1": always use private servers
READY_FLAG = "LEDGERLY_EVAL_SERVICES_READY"  # set for the child that runs on them


def wants_private_services(environ: Mapping[str, str]) -> bool:
    if environ.get(READY_FLAG) == "1":
        return False
    if environ.get(PRIVATE_FLAG) == "1":
        return True
    return not (environ.get("DATABASE_URL") and environ.get("REDIS_URL"))


def _interrupt(*_: object) -> None:
    # Once: a second Ctrl-C (the terminal signals the whole process group, and the launcher
    # forwards its own) must not break the clean-up the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run golden cases through the support pipeline and grade what each ticket ended as."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="golden .jsonl files, globs or directories")
        parser.add_argument(
            "--repeat", type=int, default=1, help="independent runs (simulator seeds 1..K)"
        )
        parser.add_argument(
            "--baseline",
            action="store_true",
            help="every ticket through the large-model agent lane, no semantic cache",
        )
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
        parser.add_argument(
            "--timeout", type=float, help="seconds per message (EVAL_MESSAGE_TIMEOUT_SECONDS)"
        )
        parser.add_argument(
            "--concurrency", type=int, help="cases played at once (EVAL_CONCURRENCY)"
        )
        parser.add_argument(
            "--release",
            help="the release to run: a name in the configured database, r1 (the repo's own), "
            "a JSON file or inline JSON {name, prompt_versions, model_ids}",
        )
        parser.add_argument("--compare", help="a second release to run and compare with")

    def handle(self, *args: Any, **options: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a CI timeout, `kill`) stops as Ctrl-C does: workers, database and
            # servers are cleaned up instead of left running.
            signal.signal(signal.SIGINT, _interrupt)
            signal.signal(signal.SIGTERM, _interrupt)
        if options["repeat"] < 1:
            raise CommandError("--repeat must be at least 1", returncode=2)
        if options["compare"] and not options["release"]:
            raise CommandError("--compare needs --release (the release to compare with)", 2)
        try:
            cases = evaluation.load_cases(options["files"])
            # Read before any private servers start: a release named here is the configured
            # database's; the child gets it as JSON.
            for name in ("release", "compare"):
                if options[name]:
                    options[f"{name}_spec"] = evaluation.release_spec(options[name])
        except (evaluation.GoldenFormatError, evaluation.ReleaseSpecError) as exc:
            raise CommandError(str(exc), returncode=2) from exc
        if wants_private_services(os.environ):
            self._run_on_private_services(options)
        self._evaluate(cases, options)

    def _run_on_private_services(self, options: dict[str, Any]) -> None:
        from ledgerly import devstack

        self.stderr.write("[evaluate] starting private Postgres+pgvector and Redis")
        devstack.use_private_services()  # sets DATABASE_URL/REDIS_URL; removed at exit
        argv = [*options["files"], "--repeat", str(options["repeat"])]
        argv += ["--baseline"] * options["baseline"] + ["--json"] * options["json"]
        for name in ("timeout", "concurrency"):
            if options[name] is not None:
                argv += [f"--{name}", str(options[name])]
        for name in ("release", "compare"):
            if options.get(f"{name}_spec") is not None:
                argv += [f"--{name}", json.dumps(options[f"{name}_spec"].as_json())]
        child = subprocess.Popen(  # noqa: S603 — this interpreter, this command
            [sys.executable, str(evaluation.ROOT / "manage.py"), "evaluate", *argv],
            env={**os.environ, READY_FLAG: "1"},
            cwd=evaluation.ROOT,
        )
        try:
            raise SystemExit(child.wait())
        except KeyboardInterrupt:
            # Let the child stop its worker and drop its database before the servers go
            # (they are stopped at exit, which SystemExit reaches and a bare SIGTERM would not).
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=90)
            except subprocess.TimeoutExpired:
                child.kill()
            raise SystemExit(130) from None

    def _evaluate(self, cases: list[evaluation.Case], options: dict[str, Any]) -> None:
        from django.conf import settings

        run_options = evaluation.options_from_settings(
            baseline=options["baseline"],
            timeout_s=options["timeout"],
            concurrency=options["concurrency"],
        )
        thresholds = evaluation.Thresholds.from_settings()
        specs = [options.get("release_spec"), options.get("compare_spec")]
        specs = [spec for spec in specs if spec is not None] or [None]
        documents = []
        with evaluation.World(log=sys.stderr) as world:
            for spec in specs:
                try:
                    repeats = world.repeat(
                        cases, repeats=options["repeat"], options=replace(run_options, release=spec)
                    )
                except evaluation.ReleaseSpecError as exc:
                    raise CommandError(str(exc), returncode=2) from exc
                document = evaluation.report(repeats, thresholds=thresholds)
                document["summary"]["mode"] = "baseline" if options["baseline"] else "pipeline"
                document["summary"]["model"] = (
                    "anthropic" if settings.ANTHROPIC_API_KEY else "simulator"
                )
                if spec is not None:
                    document["summary"]["release"] = spec.as_json()
                documents.append(document)
        below = [
            (f"{d['summary']['release']['name']}: " if len(documents) > 1 else "") + problem
            for d in documents
            for problem in d["summary"]["below_thresholds"]
        ]
        if len(documents) == 1:
            [document] = documents
            self.stdout.write(
                json.dumps(document) if options["json"] else evaluation.format_table(document)
            )
        else:
            names = (specs[0].name, specs[1].name)  # type: ignore[union-attr]
            differences = evaluation.compare_reports(documents[0], documents[1])
            if options["json"]:
                self.stdout.write(
                    json.dumps(
                        {
                            "release": documents[0],
                            "compare": documents[1],
                            "differences": differences,
                        }
                    )
                )
            else:
                for name, document in zip(names, documents, strict=True):
                    self.stdout.write(f"=== release {name} ===")
                    self.stdout.write(evaluation.format_table(document))
                    self.stdout.write("")
                self.stdout.write(evaluation.format_comparison(names, differences))
        if below:
            raise CommandError("below thresholds: " + "; ".join(below), returncode=1)
