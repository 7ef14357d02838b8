"""The hosted-CI workflow runs what .ci/run runs: `make test` on a clean checkout with Python
3.11, the Debian packages installed by the Makefile itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def workflow() -> dict[Any, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def steps() -> list[dict[str, Any]]:
    (job,) = workflow()["jobs"].values()
    return job["steps"]


def test_the_workflow_runs_on_pushes_and_pull_requests():
    triggers = workflow()[True]  # YAML 1.1 reads the key `on` as true

    assert set(triggers) == {"push", "pull_request"}


def test_it_checks_out_sets_up_python_3_11_and_runs_make_test_in_that_order():
    (job,) = workflow()["jobs"].values()
    uses = [s.get("uses", "") for s in steps()]
    runs = [s.get("run", "") for s in steps()]
    checkout = next(i for i, u in enumerate(uses) if u.startswith("actions/checkout@"))
    python = next(i for i, r in enumerate(runs) if "(3, 11)" in r)
    test = next(i for i, r in enumerate(runs) if re.match(r"make test\b", r))

    assert checkout < python < test
    # Python 3.11 on Debian 12: the system the Makefile's Debian package names are for.
    assert job["container"]["image"] == "python:3.11-bookworm"


def test_make_test_installs_the_debian_packages_before_testing():
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^test: (.*)$", makefile, flags=re.MULTILINE)

    assert target is not None
    assert "system-deps" in target.group(1).split()
    assert re.search(r"^APT_PACKAGES :=.*\bdocker-compose\b", makefile, flags=re.MULTILINE)


def test_the_workflow_holds_no_secret_and_reads_only_the_repository():
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()

    assert "secrets." not in text
    assert workflow()["permissions"] == {"contents": "read"}
