# The SDK types content blocks and error bodies as wide unions; these tests assert the shapes.
# mypy: disable-error-code="union-attr,index,arg-type,list-item,call-overload"
"""Seeded variation: repeats of one request differ like samples of a real model, facts don't."""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import httpx2
import pytest

from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from ledgerly.llm.simulator.variation import PHRASES, placeholders

from .helpers import LANE_SCHEMA, REFUND_DOCS, FakeClock, run_agent

SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]
ANA = {"id": 4417, "email": "ana.lopez@example.com", "name": "Ana Lopez"}
DUPLICATE_CHARGES = {
    "charges": [
        {"id": "ch_ana_0901", "amount": "49.00", "invoice": "INV-3001", "status": "succeeded"},
        {"id": "ch_ana_1001", "amount": "49.00", "invoice": "INV-3002", "status": "succeeded"},
        {"id": "ch_ana_1002", "amount": "49.00", "invoice": "INV-3002", "status": "succeeded"},
    ]
}
REFUND_RESULTS = {
    "get_customer": ANA,
    "list_charges": DUPLICATE_CHARGES,
    "propose_refund": {"status": "pending_approval"},
}
FACT = re.compile(r"ch_\w+|INV-[\w-]+|\d+(?:[.,]\d+)*|\[[a-z0-9-]+\]|[\w.+-]+@[\w.-]+")


def _client(**config: Any) -> anthropic.Anthropic:
    clock = FakeClock()
    transport = SimulatorTransport(SimulatorConfig(clock=clock, sleep=clock.sleep, **config))
    return anthropic.Anthropic(
        api_key="sk-sim", http_client=httpx2.Client(transport=transport), max_retries=0
    )


def _faq(client: anthropic.Anthropic, question: str, seed: int) -> str:
    message = client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=400,
        system=[
            {"type": "text", "text": "Answer only from the documents."},
            {"type": "text", "text": REFUND_DOCS},
        ],
        messages=[{"role": "user", "content": question}],
        extra_headers={"x-sim-seed": str(seed)},
    )
    return message.content[-1].text


def _facts(text: str) -> list[str]:
    return sorted(FACT.findall(text))


def test_every_wording_of_a_phrase_carries_the_same_facts() -> None:
    for key, variants in PHRASES.items():
        assert len({frozenset(placeholders(v)) for v in variants}) == 1, key


def test_the_same_seed_gives_the_same_answer(client: anthropic.Anthropic) -> None:
    question = "Can I get a refund on an annual plan, and how long does it take?"

    first = [_faq(client, question, seed) for seed in SEEDS]
    again = [_faq(client, question, seed) for seed in SEEDS]

    assert first == again


def test_other_seeds_word_a_grounded_answer_differently_but_keep_its_facts_and_citations(
    client: anthropic.Anthropic,
) -> None:
    question = "Can I get a refund on an annual plan, and how long does it take?"
    unseeded = _faq(client, question, 0)

    answers = [_faq(client, question, seed) for seed in SEEDS]

    assert len(set(answers)) >= 4
    assert {tuple(_facts(a)) for a in answers} == {tuple(_facts(unseeded))}
    assert all("30 days" in a and "5-10 business days" in a for a in answers)
    assert all("[refund-policy]" in a for a in answers)


@pytest.mark.parametrize(
    "text",
    [
        "I was charged twice for invoice INV-1001, please refund the duplicate.",
        "Do you offer a discount for students?",
        "",
    ],
    ids=["refund_without_tools", "faq_without_passages", "empty"],
)
def test_plain_replies_vary_with_the_seed(client: anthropic.Anthropic, text: str) -> None:
    def reply(seed: int) -> str:
        message = client.messages.create(
            model="claude-haiku-5-5",
            max_tokens=300,
            messages=[{"role": "user", "content": text or " "}],
            extra_headers={"x-sim-seed": str(seed)},
        )
        return message.content[-1].text

    assert len({reply(seed) for seed in SEEDS}) >= 3


def test_agent_wording_varies_across_seeds_but_ids_and_amounts_do_not(
    client: anthropic.Anthropic,
) -> None:
    user = "Hi, I'm ana.lopez@example.com. I was charged twice this month, please refund."
    runs = [
        run_agent(
            client, user=user, results=REFUND_RESULTS, extra_headers={"x-sim-seed": str(seed)}
        )
        for seed in SEEDS
    ]

    finals = [final.content[-1].text for _, final in runs]
    assert len(set(finals)) >= 4
    for calls, final in runs:
        name, args = calls[-1]
        assert (name, args["charge_id"], args["amount"]) == (
            "propose_refund",
            "ch_ana_1002",
            "49.00",
        )
        assert "ch_ana_1002" in args["reason"]
        assert "INV-3002" in args["reason"]
        assert "49.00" in final.content[-1].text
        assert "ch_ana_1002" in final.content[-1].text


def test_seed_0_in_a_header_gives_the_unseeded_answer_even_if_the_setting_has_a_seed() -> None:
    question = "How long does a refund take to show up on my card?"
    seeded, unseeded = _client(seed=5), _client()

    assert _faq(seeded, question, 0) == _faq(unseeded, question, 0)
    assert _faq(unseeded, question, 0) == (
        "Refunds go back to the original payment method and take 5-10 business days to appear. "
        "[refund-policy]"
    )


def test_the_seed_setting_varies_answers_without_a_header() -> None:
    def answer(seed: int) -> str:
        message = _client(seed=seed).messages.create(
            model="claude-haiku-5-5",
            max_tokens=300,
            messages=[{"role": "user", "content": "Do you offer a discount for students?"}],
        )
        return message.content[-1].text

    assert len({answer(seed) for seed in SEEDS}) >= 3
    assert answer(4) == answer(4)


def test_a_bad_seed_header_is_a_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="x-sim-seed"):
        client.messages.create(
            model="claude-haiku-5-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-sim-seed": "many"},
        )


def _classify(client: anthropic.Anthropic, text: str, seed: int) -> dict[str, Any]:
    message = client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=300,
        messages=[{"role": "user", "content": text}],
        output_config={"format": {"type": "json_schema", "schema": LANE_SCHEMA}},
        extra_headers={"x-sim-seed": str(seed)},
    )
    return json.loads(message.content[0].text)


@pytest.mark.parametrize(
    ("text", "lane"),
    [
        ("I was charged twice for invoice INV-1001, please refund the duplicate.", "refund"),
        ("How long do refunds take to appear on a card?", "faq"),
        ("Why was I charged $49 on my card last week? My plan should be Starter.", "agent"),
    ],
)
def test_classification_confidence_jitters_within_a_tenth_and_the_label_stays(
    client: anthropic.Anthropic, text: str, lane: str
) -> None:
    base = _classify(client, text, 0)["confidence"]

    decisions = [_classify(client, text, seed) for seed in SEEDS]

    assert {d["lane"] for d in decisions} == {lane}
    assert all(abs(d["confidence"] - base) <= 0.1 + 1e-9 for d in decisions)
    assert all(0.0 <= d["confidence"] <= 1.0 for d in decisions)
    assert len({d["confidence"] for d in decisions}) >= 3


def test_confidence_jitter_is_clamped_to_the_schema_bounds(client: anthropic.Anthropic) -> None:
    schema = {
        **LANE_SCHEMA,
        "properties": {
            **LANE_SCHEMA["properties"],
            "confidence": {"type": "number", "minimum": 0, "maximum": 0.93},
        },
    }
    text = "I opened a chargeback with my bank for ch_9."  # 0.92 before the jitter
    values = []
    for seed in range(1, 30):
        message = client.messages.create(
            model="claude-haiku-5-5",
            max_tokens=300,
            messages=[{"role": "user", "content": text}],
            output_config={"format": {"type": "json_schema", "schema": schema}},
            extra_headers={"x-sim-seed": str(seed)},
        )
        values.append(json.loads(message.content[0].text)["confidence"])

    assert max(values) == 0.93
    assert min(values) >= 0.82


SCOPED_TOOLS: list[dict[str, Any]] = [
    {
        "name": "lookup_customer",
        "description": "The signed-in customer's account.",
        "input_schema": {"type": "object", "properties": {}},
    },
    {
        "name": "list_charges",
        "description": "The customer's charges.",
        "input_schema": {"type": "object", "properties": {}},
    },
    {
        "name": "search_help_center",
        "description": "Search help-center articles.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
]
SCOPED_RESULTS = {
    "lookup_customer": {"email": "ana.lopez@example.com", "name": "Ana Lopez"},
    "list_charges": {"charges": [{"ref": "ch_1", "amount": "49.00", "status": "succeeded"}]},
    "search_help_center": {"articles": []},
}


def _lookup_turns(client: anthropic.Anthropic, seed: int) -> list[list[str]]:
    turns: list[list[str]] = []
    run_agent(
        client,
        user="What did you charge me for this month?",
        results=SCOPED_RESULTS,
        tools=SCOPED_TOOLS,
        turns=turns,
        extra_headers={"x-sim-seed": str(seed)},
    )
    return turns


def test_seed_0_looks_things_up_one_at_a_time_in_priority_order(
    client: anthropic.Anthropic,
) -> None:
    assert _lookup_turns(client, 0) == [
        ["lookup_customer"],
        ["list_charges"],
        ["search_help_center"],
    ]


def test_seeds_reorder_independent_lookups_and_sometimes_batch_two_in_one_turn(
    client: anthropic.Anthropic,
) -> None:
    runs = [_lookup_turns(client, seed) for seed in SEEDS]

    assert all(
        sorted(name for turn in turns for name in turn)
        == ["list_charges", "lookup_customer", "search_help_center"]
        for turns in runs
    )
    assert len({tuple(turn[0] for turn in turns) for turns in runs}) >= 2  # another order
    assert any(len(turn) == 2 for turns in runs for turn in turns)  # parallel tool_use blocks
    assert any(all(len(turn) == 1 for turn in turns) for turns in runs)  # or one per turn
    assert runs == [_lookup_turns(client, seed) for seed in SEEDS]  # reproducible


def test_a_lookup_that_needs_another_ones_result_still_waits_for_it(
    client: anthropic.Anthropic,
) -> None:
    for seed in SEEDS:
        turns: list[list[str]] = []
        calls, _ = run_agent(
            client,
            user="Hi, I'm ana.lopez@example.com. I was charged twice this month, please refund.",
            results=REFUND_RESULTS,
            turns=turns,
            extra_headers={"x-sim-seed": str(seed)},
        )

        assert turns[:2] == [["get_customer"], ["list_charges"]]
        assert calls[1] == ("list_charges", {"customer_id": 4417})


def test_streamed_and_plain_answers_to_one_request_are_the_same_sample(
    client: anthropic.Anthropic,
) -> None:
    params: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Do you offer a discount for students?"}],
        "extra_headers": {"x-sim-seed": "7"},
    }
    with client.messages.stream(**params) as stream:
        streamed = stream.get_final_message()

    assert streamed.content[-1].text == client.messages.create(**params).content[-1].text


# ------------------------------------------------------------------------ per-request faults
RETRY_AFTER_FAULTS = ("overloaded", "rate_limited")
PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "What payment methods can I use?"}],
}


def _outcomes(client: anthropic.Anthropic, headers: dict[str, str], n: int) -> list[int]:
    statuses = []
    for i in range(n):
        params = {**PARAMS, "messages": [{"role": "user", "content": f"Question {i}: refunds?"}]}
        try:
            raw = client.messages.with_raw_response.create(**params, extra_headers=headers)
            statuses.append(raw.status_code)
        except anthropic.APIStatusError as exc:
            statuses.append(exc.status_code)
    return statuses


def test_fault_rate_header_injects_transient_faults_reproducibly_per_seed() -> None:
    headers = {"x-sim-fault-rate": "0.3", "x-sim-seed": "11", "x-sim-retry-after": "0.001"}

    first = _outcomes(_client(), headers, 80)
    again = _outcomes(_client(), headers, 80)
    other_seed = _outcomes(_client(), {**headers, "x-sim-seed": "12"}, 80)

    assert first == again
    assert first != other_seed
    assert 10 <= sum(s != 200 for s in first) <= 40
    assert {s for s in first if s != 200} <= {429, 500, 529}
    assert _outcomes(_client(), {}, 80) == [200] * 80  # without the header: the setting (0)


def test_fault_rate_header_overrides_the_setting() -> None:
    assert _outcomes(_client(fault_rate=1.0), {"x-sim-fault-rate": "0"}, 10) == [200] * 10
    assert 200 not in _outcomes(_client(), {"x-sim-fault-rate": "1"}, 10)


def test_an_sdk_retry_of_a_faulted_request_rolls_again_and_can_succeed() -> None:
    clock = FakeClock()
    # Faults that carry retry-after, so the SDK's backoff does not really sleep for seconds.
    transport = SimulatorTransport(
        SimulatorConfig(clock=clock, sleep=clock.sleep, random_faults=RETRY_AFTER_FAULTS)
    )
    client = anthropic.Anthropic(
        api_key="sk-sim", http_client=httpx2.Client(transport=transport), max_retries=5
    )
    headers = {"x-sim-fault-rate": "0.5", "x-sim-seed": "3", "x-sim-retry-after": "0.001"}
    retries = []
    for i in range(30):
        params = {**PARAMS, "messages": [{"role": "user", "content": f"Question {i}: refunds?"}]}
        raw = client.messages.with_raw_response.create(**params, extra_headers=headers)
        assert raw.parse().stop_reason == "end_turn"
        retries.append(raw.retries_taken)

    assert any(r > 0 for r in retries)  # some first attempts failed, and their retries passed
    assert retries.count(0) >= 5


def test_a_retry_sequence_is_the_same_on_a_fresh_simulator() -> None:
    def retries() -> list[int]:
        clock = FakeClock()
        transport = SimulatorTransport(
            SimulatorConfig(clock=clock, sleep=clock.sleep, random_faults=RETRY_AFTER_FAULTS)
        )
        client = anthropic.Anthropic(
            api_key="sk-sim", http_client=httpx2.Client(transport=transport), max_retries=8
        )
        headers = {"x-sim-fault-rate": "0.5", "x-sim-seed": "9", "x-sim-retry-after": "0.001"}
        return [
            client.messages.with_raw_response.create(
                **{**PARAMS, "messages": [{"role": "user", "content": f"Q{i}"}]},
                extra_headers=headers,
            ).retries_taken
            for i in range(20)
        ]

    assert retries() == retries()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_a_bad_fault_rate_header_is_a_400(client: anthropic.Anthropic, value: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match="x-sim-fault-rate"):
        client.messages.create(**PARAMS, extra_headers={"x-sim-fault-rate": value})
