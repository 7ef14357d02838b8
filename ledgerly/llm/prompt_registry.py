"""Versioned prompt files: `ledgerly/llm/prompts/<name>.md`.

Each file starts with front matter naming it and its version:

    ---
    name: summarise_conversation
    version: 1
    ---
    The system prompt text...

The content hash (sha256 of the text) is computed, and `prompts/LOCK.json` records the hash of
each name@version: changing a prompt's text means bumping its version and re-locking
(`python -m ledgerly.llm.prompt_registry --lock`); the test suite fails otherwise, and at run
time a locked version whose text has changed is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
LOCK_FILE = PROMPTS_DIR / "LOCK.json"
_FRONT = re.compile(r"\A---\n(?P<meta>.*?)\n---\n(?P<body>.*)\Z", re.DOTALL)


class PromptError(LookupError):
    """A prompt file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    text: str
    sha256: str

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
    if name != path.stem:
        raise PromptError(f"{path.name}: front matter name {name!r} must match the file name")
    if not version.isdigit() or int(version) < 1:
        raise PromptError(f"{path.name}: version must be a positive integer, got {version!r}")
    text = match["body"].strip() + "\n"
    return Prompt(
        name=name,
        version=int(version),
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


@functools.cache
def get(name: str) -> Prompt:
    """The prompt named `name` (read once per process)."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise PromptError(f"bad prompt name {name!r}")
    path = PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise PromptError(f"no prompt file {path}")
    prompt = parse(path)
    locked = read_lock().get(prompt.ref)
    if locked is not None and locked != prompt.sha256:
        # Calls are recorded (and answers cached) by name@version: other text under a locked
        # version would be passed off as the reviewed one.
        raise PromptError(
            f"{prompt.ref} differs from its locked text: bump its version and re-lock "
            "(python -m ledgerly.llm.prompt_registry --lock)"
        )
    return prompt


def all_prompts() -> list[Prompt]:
    return [parse(path) for path in sorted(PROMPTS_DIR.glob("*.md"))]


def read_lock() -> dict[str, str]:
    return dict(json.loads(LOCK_FILE.read_text())) if LOCK_FILE.exists() else {}


def write_lock() -> None:
    """Lock every prompt file's name@version to its hash; a version already locked to other
    text is refused (a changed prompt is a new version)."""
    lock = read_lock()
    for prompt in all_prompts():
        if lock.get(prompt.ref, prompt.sha256) != prompt.sha256:
            raise PromptError(f"{prompt.ref} differs from its locked text: bump its version")
        lock[prompt.ref] = prompt.sha256
    LOCK_FILE.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--lock"]:
        write_lock()
    for prompt in all_prompts():
        print(f"{prompt.ref} {prompt.sha256[:12]}")
