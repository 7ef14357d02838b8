from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.apps import apps

from ledgerly.llm import prompt_registry

ROOT = Path(__file__).resolve().parents[2]


def test_every_prompt_version_matches_its_own_directorys_lock():
    """Changing a prompt's text without bumping its version fails here; so does a lock entry
    kept in another app's LOCK.json than the prompt's own."""
    for prompt in prompt_registry.all_prompts():
        assert prompt.path is not None
        assert prompt_registry.read_lock(prompt.path.parent).get(prompt.ref) == prompt.sha256


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("summarise_conversation", "ledgerly/llm/prompts"),
        ("route_ticket", "support/prompts"),
        ("faq_answer", "support/prompts"),
    ],
)
def test_prompts_live_with_the_app_that_uses_them(name, home):
    prompt = prompt_registry.get(name)
    assert prompt.version >= 1
    assert len(prompt.sha256) == 64
    assert prompt.path == ROOT / home / f"{name}.md"


def test_only_the_summary_prompt_asks_for_a_summary():
    # The simulator (and a reader) tells a summary request by the word; others must not say it.
    says_summary = {p.name for p in prompt_registry.all_prompts() if "summar" in p.text.lower()}
    assert says_summary == {"summarise_conversation"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("no front matter", "front matter"),
        ("---\nname: other\nversion: 1\n---\ntext", "must match the file name"),
        ("---\nname: broken\nversion: one\n---\ntext", "positive integer"),
    ],
)
def test_malformed_prompt_files_are_refused(tmp_path, content, message):
    path = tmp_path / "broken.md"
    path.write_text(content)
    with pytest.raises(prompt_registry.PromptError, match=message):
        prompt_registry.parse(path)


def _prompt(directory: Path, name: str, version: int, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.md").write_text(f"---\nname: {name}\nversion: {version}\n---\n{text}\n")


@pytest.fixture
def two_apps(tmp_path, monkeypatch):
    """Two installed apps with prompt directories of their own and one without any."""
    alpha, beta, bare = tmp_path / "alpha", tmp_path / "beta", tmp_path / "bare"
    bare.mkdir()
    _prompt(alpha / "prompts", "greet", 1, "Say hello.")
    _prompt(beta / "prompts", "farewell", 1, "Say goodbye.")
    configs = [SimpleNamespace(path=str(p)) for p in (alpha, bare, beta)]
    monkeypatch.setattr(apps, "get_app_configs", lambda: configs)
    prompt_registry.get.cache_clear()
    yield SimpleNamespace(alpha=alpha / "prompts", beta=beta / "prompts")
    prompt_registry.get.cache_clear()


def test_prompts_are_found_in_every_apps_prompts_directory(two_apps):
    prompt_registry.write_lock()

    assert [p.ref for p in prompt_registry.all_prompts()] == ["farewell@1", "greet@1"]
    assert prompt_registry.get("farewell").path == two_apps.beta / "farewell.md"
    assert prompt_registry.get("greet").text == "Say hello.\n"


def test_each_directory_keeps_its_own_lock(two_apps):
    prompt_registry.write_lock()

    assert set(prompt_registry.read_lock(two_apps.alpha)) == {"greet@1"}
    assert set(prompt_registry.read_lock(two_apps.beta)) == {"farewell@1"}
    assert set(prompt_registry.read_lock()) == {"greet@1", "farewell@1"}


def test_a_name_defined_by_two_apps_is_refused(two_apps):
    _prompt(two_apps.beta, "greet", 3, "Say hi.")

    with pytest.raises(prompt_registry.PromptError, match="defined twice"):
        prompt_registry.get("greet")
    with pytest.raises(prompt_registry.PromptError, match="defined twice"):
        prompt_registry.write_lock()
    assert not (two_apps.alpha / "LOCK.json").exists()


def test_a_prompt_edited_without_a_version_bump_is_refused_at_load(two_apps):
    # Records and the semantic cache key on name@version: the same version with other text
    # would pass the new prompt off as the old one.
    prompt_registry.write_lock()
    _prompt(two_apps.beta, "farewell", 1, "Say see you.")

    with pytest.raises(prompt_registry.PromptError, match="bump its version"):
        prompt_registry.get("farewell")


def test_a_locked_prompt_loads(two_apps):
    prompt_registry.write_lock()

    prompt = prompt_registry.get("greet")

    assert (prompt.ref, prompt.text) == ("greet@1", "Say hello.\n")


def test_re_locking_cannot_rewrite_the_hash_of_a_locked_version(two_apps):
    prompt_registry.write_lock()
    _prompt(two_apps.beta, "farewell", 1, "Say see you.")

    with pytest.raises(prompt_registry.PromptError, match="bump its version"):
        prompt_registry.write_lock()

    _prompt(two_apps.beta, "farewell", 2, "Say see you.")
    prompt_registry.write_lock()
    assert set(prompt_registry.read_lock(two_apps.beta)) == {"farewell@1", "farewell@2"}
    assert prompt_registry.get("farewell").ref == "farewell@2"


def test_the_lock_command_lists_every_apps_prompts():
    # Without --lock it only reads: the repository's locks stay as they are.
    result = subprocess.run(
        [sys.executable, "-m", "ledgerly.llm.prompt_registry"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines()}
    assert listed["route_ticket@1"] == str(ROOT / "support/prompts/route_ticket.md")
    summary = ROOT / "ledgerly/llm/prompts/summarise_conversation.md"
    assert listed["summarise_conversation@1"] == str(summary)
