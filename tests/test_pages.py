from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_pages_say_plainly_when_the_simulator_answers(client):
    response = client.get("/signin/")
    assert response.status_code == 200
    assert "Answers by: Offline simulator (not Claude)" in response.content.decode()


@pytest.mark.django_db
def test_pages_name_claude_when_a_key_is_set(client, settings):
    settings.ANTHROPIC_API_KEY = "sk-ant-test-not-used"  # the gateway's config follows settings
    body = client.get("/signin/").content.decode()
    assert "Answers by: Claude (Anthropic API)" in body
    assert "claude-haiku-5-5" in body
