from __future__ import annotations

import pytest

from ledgerly.llm import prompt_registry


def test_every_prompt_version_matches_its_locked_hash():
    """Changing a prompt's text without bumping its version fails here."""
    lock = prompt_registry.read_lock()
    current = {p.ref: p.sha256 for p in prompt_registry.all_prompts()}

    assert current == {ref: lock.get(ref) for ref in current}


@pytest.mark.parametrize("name", ["summarise_conversation", "route_ticket", "faq_answer"])
def test_prompts_the_lanes_use_exist(name):
    prompt = prompt_registry.get(name)
    assert prompt.version >= 1
    assert len(prompt.sha256) == 64


def test_only_the_summary_prompt_asks_for_a_summary():
    # The simulator (and a reader) tells a summary request by the word; others must not say it.
    says_summary = {p.name: "summar" in p.text.lower() for p in prompt_registry.all_prompts()}
    assert says_summary == {
        "faq_answer": False,
        "route_ticket": False,
        "summarise_conversation": True,
    }


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


@pytest.fixture
def prompts_dir(tmp_path, monkeypatch):
    """A prompt directory of its own, locked with the hash of version 1's text."""
    monkeypatch.setattr(prompt_registry, "PROMPTS_DIR", tmp_path)
    monkeypatch.setattr(prompt_registry, "LOCK_FILE", tmp_path / "LOCK.json")
    (tmp_path / "greet.md").write_text("---\nname: greet\nversion: 1\n---\nSay hello.\n")
    prompt_registry.write_lock()
    prompt_registry.get.cache_clear()
    yield tmp_path
    prompt_registry.get.cache_clear()


def test_a_prompt_edited_without_a_version_bump_is_refused_at_load(prompts_dir):
    # Records and the semantic cache key on name@version: the same version with other text
    # would pass the new prompt off as the old one.
    (prompts_dir / "greet.md").write_text("---\nname: greet\nversion: 1\n---\nSay goodbye.\n")

    with pytest.raises(prompt_registry.PromptError, match="bump its version"):
        prompt_registry.get("greet")


def test_a_locked_prompt_loads(prompts_dir):
    prompt = prompt_registry.get("greet")

    assert (prompt.ref, prompt.text) == ("greet@1", "Say hello.\n")


def test_re_locking_cannot_rewrite_the_hash_of_a_locked_version(prompts_dir):
    (prompts_dir / "greet.md").write_text("---\nname: greet\nversion: 1\n---\nSay goodbye.\n")

    with pytest.raises(prompt_registry.PromptError, match="bump its version"):
        prompt_registry.write_lock()

    (prompts_dir / "greet.md").write_text("---\nname: greet\nversion: 2\n---\nSay goodbye.\n")
    prompt_registry.write_lock()
    assert set(prompt_registry.read_lock()) == {"greet@1", "greet@2"}
    assert prompt_registry.get("greet").ref == "greet@2"
