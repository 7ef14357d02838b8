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
