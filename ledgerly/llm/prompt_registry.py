"""Versioned prompt files, kept with the app that uses them: `<app>/prompts/<name>.md`.

Like templates with APP_DIRS, every installed Django app may have a `prompts/` directory (the
gateway's own summary prompt is in `ledgerly/llm/prompts/`, the support lanes' in
`support/prompts/`). The directories are found through the app registry, so this module never
imports the apps that use it. A prompt name must be unique across all of them.

Each file starts with front matter naming it and its version:

    ---
    name: summarise_conversation
    version: 1
    ---
    The system prompt text...

Other versions of a prompt may sit beside it as `<name>@<version>.md` (same front matter): a
candidate release's new text, or an older text a release still pins. `get(name)` is the plain
file's version (what runs without a release); `get(name, version=N)` is version N from whichever
file holds it. Every version is locked.

The content hash (sha256 of the text) is computed, and each directory's own `LOCK.json` records
the hash of each of its name@version: changing a prompt's text means bumping its version and
re-locking (`python -m ledgerly.llm.prompt_registry --lock`, which relocks every directory); the
test suite fails otherwise, and at run time a locked version whose text has changed is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIRNAME = "prompts"
LOCK_NAME = "LOCK.json"
_FRONT = re.compile(r"\A---\n(?P<meta>.*?)\n---\n(?P<body>.*)\Z", re.DOTALL)


class PromptError(LookupError):
    """A prompt file is missing, malformed, ambiguous or differs from its locked text."""


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    text: str
    sha256: str
    path: Path | None = None  # the file it was read from

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse(path: Path) -> Prompt:
    match = _FRONT.match(path.read_text(encoding="utf-8"))
    if not match:
        raise PromptError(f"{path.name}: expected front matter between '---' lines")
    meta: dict[str, str] = {}
    for line in match["meta"].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip()] = value.strip()
    name, version = meta.get("name", ""), meta.get("version", "")
    stem, at, pinned = path.stem.partition("@")
    if name != stem:
        raise PromptError(f"{path.name}: front matter name {name!r} must match the file name")
    if not version.isdigit() or int(version) < 1:
        raise PromptError(f"{path.name}: version must be a positive integer, got {version!r}")
    if at and pinned != version:
        raise PromptError(f"{path.name}: front matter version {version} must match the file name")
    text = match["body"].strip() + "\n"
    return Prompt(
        name=name,
        version=int(version),
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        path=path,
    )


def prompt_dirs() -> list[Path]:
    """The `prompts/` directory of every installed app that has one, in INSTALLED_APPS order."""
    from django.apps import apps

    found = (Path(cfg.path) / PROMPTS_DIRNAME for cfg in apps.get_app_configs())
    return [d for d in found if d.is_dir()]


def _files() -> dict[str, Path]:
    """Every prompt name and its file; a name found in two directories is refused (which one a
    call used would depend on the order of INSTALLED_APPS)."""
    files: dict[str, Path] = {}
    for directory in prompt_dirs():
        for path in sorted(directory.glob("*.md")):
            if "@" in path.stem:
                continue  # another version of a prompt (see _version_files)
            other = files.setdefault(path.stem, path)
            if other != path:
                raise PromptError(
                    f"prompt {path.stem!r} is defined twice: {other} and {path}; "
                    "names must be unique across apps"
                )
    return files


def _version_file(name: str, version: int) -> Path | None:
    """The file holding version `version` of prompt `name`: the plain file when it is that
    version, else `<name>@<version>.md` in the plain file's directory."""
    path = _files().get(name)
    if path is None:
        return None
    if parse(path).version == version:
        return path
    other = path.parent / f"{name}@{version}.md"
    return other if other.is_file() else None


@functools.cache
def get(name: str, version: int | None = None) -> Prompt:
    """The prompt named `name` (read once per process): the plain file's version, or with
    `version` that version (a release pins it)."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise PromptError(f"bad prompt name {name!r}")
    path = _files().get(name) if version is None else _version_file(name, version)
    if path is None:
        which = f"{name}.md" if version is None else f"{name}@{version}"
        raise PromptError(f"no prompt file {which} in any app's prompts/ directory")
    prompt = parse(path)
    locked = read_lock(path.parent).get(prompt.ref)
    if locked is not None and locked != prompt.sha256:
        # Calls are recorded (and answers cached) by name@version: other text under a locked
        # version would be passed off as the reviewed one.
        raise PromptError(
            f"{prompt.ref} differs from its locked text: bump its version and re-lock "
            "(python -m ledgerly.llm.prompt_registry --lock)"
        )
    return prompt


def all_prompts() -> list[Prompt]:
    """Every prompt version of every app, by name and version."""
    found: list[Prompt] = []
    for _name, path in sorted(_files().items()):
        found.append(parse(path))
        found.extend(parse(other) for other in path.parent.glob(f"{path.stem}@*.md"))
    refs = [p.ref for p in found]
    twice = sorted({ref for ref in refs if refs.count(ref) > 1})
    if twice:
        raise PromptError(f"{', '.join(twice)} is kept in two files: a version lives in one")
    return sorted(found, key=lambda p: (p.name, p.version))


def versions(name: str) -> list[int]:
    """The versions of prompt `name` kept in the repo (a release may pin any of them)."""
    return [p.version for p in all_prompts() if p.name == name]


def read_lock(directory: Path | None = None) -> dict[str, str]:
    """The lock of one prompts directory; without one, the union of every directory's lock."""
    if directory is None:
        merged: dict[str, str] = {}
        for each in prompt_dirs():
            merged.update(read_lock(each))
        return merged
    lock_file = directory / LOCK_NAME
    return dict(json.loads(lock_file.read_text())) if lock_file.exists() else {}


def write_lock() -> None:
    """Lock every prompt file's name@version to its hash, in its own directory's LOCK.json; a
    version already locked to other text is refused (a changed prompt is a new version), and
    nothing is written then."""
    _files()  # refuse duplicate names before writing anything
    locks: dict[Path, dict[str, str]] = {}
    for directory in prompt_dirs():
        lock = read_lock(directory)
        for path in sorted(directory.glob("*.md")):
            prompt = parse(path)
            if lock.get(prompt.ref, prompt.sha256) != prompt.sha256:
                raise PromptError(f"{prompt.ref} differs from its locked text: bump its version")
            lock[prompt.ref] = prompt.sha256
        locks[directory] = lock
    for directory, lock in locks.items():
        (directory / LOCK_NAME).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledgerly.settings")
    django.setup()
    if argv == ["--lock"]:
        write_lock()
    for prompt in all_prompts():
        print(f"{prompt.ref} {prompt.sha256[:12]} {prompt.path}")


if __name__ == "__main__":
    main(sys.argv[1:])
