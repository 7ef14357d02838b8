"""A release's pins reach the gateway: the prompt version and the model id of each tier its
calls use, recorded on every LLMCall; prompt files keep other versions beside them."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledgerly import llm
from ledgerly.llm import prompt_registry
from ledgerly.llm.models import LLMCall
from tests.llm.conftest import gateway, make_gateway, run_ctx, simulator, user  # noqa: F401

pytestmark = pytest.mark.django_db

REAL = Path(__file__).resolve().parents[2] / "ledgerly" / "llm" / "prompts"
NAME = "summarise_conversation"


@pytest.fixture
def two_versions(tmp_path, monkeypatch) -> Iterator[Path]:
    """The summary prompt as the repo has it (version 1) and a version 2 beside it."""
    directory = tmp_path / "prompts"
    directory.mkdir()
    shutil.copy(REAL / f"{NAME}.md", directory / f"{NAME}.md")
    text = (REAL / f"{NAME}.md").read_text().replace("version: 1", "version: 2")
    (directory / f"{NAME}@2.md").write_text(text + "\nKeep the summary under 80 words.\n")
    monkeypatch.setattr(prompt_registry, "prompt_dirs", lambda: [directory])
    prompt_registry.get.cache_clear()
    yield directory
    prompt_registry.get.cache_clear()


def pinned(
    *, models: dict[str, str] | None = None, prompts: dict[str, int] | None = None
) -> llm.CallContext:
    return dataclasses.replace(
        run_ctx(run_id="run-pins", customer_ref="cus_pins"),
        pins=llm.Pins.of(release="r2", models=models or {}, prompts=prompts or {}),
    )


def test_another_version_of_a_prompt_is_kept_beside_it(two_versions):
    assert prompt_registry.get(NAME).version == 1
    assert prompt_registry.get(NAME, 2).version == 2
    assert prompt_registry.get(NAME, 2).text != prompt_registry.get(NAME).text
    assert prompt_registry.versions(NAME) == [1, 2]
    with pytest.raises(prompt_registry.PromptError, match="no prompt file"):
        prompt_registry.get(NAME, 3)


def test_every_version_is_locked(two_versions):
    prompt_registry.write_lock()
    lock = prompt_registry.read_lock(two_versions)
    assert set(lock) == {f"{NAME}@1", f"{NAME}@2"}
    (two_versions / f"{NAME}@2.md").write_text(
        (two_versions / f"{NAME}@2.md").read_text() + "changed\n"
    )
    prompt_registry.get.cache_clear()
    with pytest.raises(prompt_registry.PromptError, match="differs from its locked text"):
        prompt_registry.get(NAME, 2)


def test_a_versioned_file_must_say_its_version(tmp_path):
    path = tmp_path / f"{NAME}@3.md"
    path.write_text(f"---\nname: {NAME}\nversion: 2\n---\ntext\n")
    with pytest.raises(prompt_registry.PromptError, match="must match the file name"):
        prompt_registry.parse(path)


@pytest.mark.usefixtures("gateway")
def test_pinned_prompt_version_and_model_are_what_the_call_uses(two_versions):
    completion = llm.complete(
        ctx=pinned(models={"small": "claude-sonnet-5-5"}, prompts={NAME: 2}),
        tier="small",
        purpose="summarise",
        prompt=NAME,
        messages=user("Customer: I was charged twice for invoice INV-1001."),
        max_tokens=200,
        fallback="none",
    )

    row = LLMCall.objects.get(pk=completion.call_id)
    assert (completion.model, row.model, row.served_tier) == ("claude-sonnet-5-5",) * 2 + ("small",)
    assert (row.prompt_version, row.prompt_hash) == (2, prompt_registry.get(NAME, 2).sha256)
    assert completion.prompt_ref == f"{NAME}@2"


@pytest.mark.usefixtures("gateway")
def test_without_pins_the_call_uses_the_settings_and_the_plain_file(two_versions):
    completion = llm.complete(
        ctx=run_ctx(run_id="run-plain"),
        tier="small",
        purpose="summarise",
        prompt=NAME,
        messages=user("Customer: I was charged twice for invoice INV-1001."),
        max_tokens=200,
        fallback="none",
    )
    row = LLMCall.objects.get(pk=completion.call_id)
    assert (row.model, row.prompt_version) == ("claude-haiku-5-5", 1)


@pytest.mark.usefixtures("gateway")
def test_a_pinned_model_without_a_price_is_refused_before_any_call():
    with pytest.raises(llm.ModelCallFailed, match="no price or rate limit"):
        llm.complete(
            ctx=pinned(models={"small": "claude-unknown-9"}),
            tier="small",
            purpose="summarise",
            prompt=NAME,
            messages=user("hello"),
            max_tokens=50,
            fallback="none",
        )
    assert not LLMCall.objects.filter(run_id="run-pins").exists()


def test_pins_survive_a_checkpoint():
    ctx = pinned(models={"large": "claude-haiku-5-5"}, prompts={"faq_answer": 1})
    again = llm.CallContext.from_dict(ctx.as_dict())
    assert again == ctx
    assert again.pins is not None
    assert again.pins.model_for("large") == "claude-haiku-5-5"
