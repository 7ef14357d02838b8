"""Request validation: the current Messages API's rules, answered with the API's 400s and 404s."""

from __future__ import annotations

import re
from typing import Any

from .errors import SimulatedAPIError, invalid
from .models import MODELS, ModelSpec
from .thinking import signature_is_valid

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MAX_CACHE_BREAKPOINTS = 4


def resolve_model(body: dict[str, Any], *, today: Any) -> ModelSpec:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    spec = MODELS.get(model)
    if spec is None:
        raise SimulatedAPIError("not_found_error", f"model: {model}")
    if spec.retired_on is not None and today() >= spec.retired_on:
        raise SimulatedAPIError(
            "not_found_error",
            f"model: {model} was retired on {spec.retired_on.isoformat()} and is no longer "
            "available. Please migrate to a current model.",
        )
    return spec


# Top-level fields the Messages API knows (SDK 2.11's MessageCreateParams, plus the sampling
# parameters older models still take); anything else is refused, as the API does.
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "inference_geo",
        "speed",
        "cache_control",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
    }
)
COUNT_ONLY_EXCLUDED = frozenset({"max_tokens", "stream", "stop_sequences", "metadata"})


def check_messages_request(body: dict[str, Any], spec: ModelSpec, *, count_only: bool) -> None:
    """Raise SimulatedAPIError for anything the API would refuse."""
    allowed = KNOWN_FIELDS - COUNT_ONLY_EXCLUDED if count_only else KNOWN_FIELDS
    extra = sorted(set(body) - allowed)
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not count_only:
        _check_max_tokens(body, spec)
    _check_sampling(body, spec)
    _check_thinking(body, spec)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    _check_messages(messages, spec)
    tools = _check_tools(body.get("tools"))
    _check_tool_choice(body, spec, tools)
    _check_output_config(body.get("output_config"))
    _check_cache_breakpoints(body)


def _check_max_tokens(body: dict[str, Any], spec: ModelSpec) -> None:
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid("max_tokens: Input should be a valid integer greater than or equal to 1")
    if max_tokens > spec.max_output_tokens:
        raise invalid(
            f"max_tokens: {max_tokens} > {spec.max_output_tokens}, which is the maximum allowed "
            f"number of output tokens for {spec.id}"
        )


def _check_sampling(body: dict[str, Any], spec: ModelSpec) -> None:
    given = [name for name in ("temperature", "top_p", "top_k") if body.get(name) is not None]
    if spec.generation >= 5 and given:
        raise invalid(
            f"{given[0]}: sampling parameters (temperature, top_p, top_k) are not supported "
            f"by {spec.id}. Remove them from the request."
        )
    if "temperature" in given and "top_p" in given:
        raise invalid(
            "`temperature` and `top_p` cannot both be specified for this model. "
            "Please use only one."
        )
    temperature = body.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0.0 <= temperature <= 1.0
    ):
        raise invalid("temperature: Input should be less than or equal to 1")


def _check_thinking(body: dict[str, Any], spec: ModelSpec) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or "type" not in thinking:
        raise invalid("thinking: Input should be an object with a `type`")
    kind = thinking["type"]
    if spec.generation >= 5:
        if kind not in ("adaptive", "disabled"):
            raise invalid(
                f"thinking.type: '{kind}' is not supported for {spec.id}. Use "
                'thinking: {"type": "adaptive"} (the model decides how much to think) '
                'or {"type": "disabled"}.'
            )
        return
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if budget >= int(body.get("max_tokens") or 0):
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    elif kind != "disabled":
        raise invalid(f"thinking.type: '{kind}' is not supported for {spec.id}.")


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content: Input should be a valid string or list")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or "type" not in block:
            raise invalid(f"{where}.content.{j}: Input should be an object with a `type`")
    return content


def _check_messages(messages: list[Any], spec: ModelSpec) -> None:
    previous_tool_uses: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{where}: Input should be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        blocks = _content_blocks(message.get("content"), where)
        if role == "user":
            results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            unexpected = [r for r in results if r not in previous_tool_uses]
            if unexpected:
                raise invalid(
                    f"{where}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{unexpected[0]}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
            missing = [t for t in previous_tool_uses if t not in results]
            if missing:
                raise invalid(
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
            previous_tool_uses = []
        else:
            previous_tool_uses = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
            for j, block in enumerate(blocks):
                if block.get("type") == "thinking" and not signature_is_valid(
                    str(block.get("thinking", "")), str(block.get("signature", ""))
                ):
                    raise invalid(f"{where}.content.{j}: Invalid `signature` in `thinking` block")
    if messages[-1].get("role") == "assistant":
        if spec.generation >= 5:
            raise invalid(
                f"This model does not support assistant message prefill. The conversation must "
                f"end with a user message ({spec.id})."
            )
        if previous_tool_uses:
            raise invalid(
                f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
                f"blocks immediately after: {', '.join(previous_tool_uses)}."
            )


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid(f"tools.{i}: Input should be an object")
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise invalid(
                f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )
        if name in names:
            raise invalid(f"tools: Tool names must be unique. Duplicate: {name}")
        names.add(name)
        if tool.get("type") not in (None, "custom"):
            continue  # server tools are accepted and never called by the simulator
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise invalid(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        if tool.get("strict"):
            _check_strict_schema(schema, f"tools.{i}.custom.input_schema")
    return tools


def _check_tool_choice(body: dict[str, Any], spec: ModelSpec, tools: list[dict[str, Any]]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    kind = choice["type"]
    if kind in ("any", "tool"):
        if not spec.forced_tool_choice:
            raise invalid(
                f"tool_choice: forced tool use (type '{kind}') is not supported by {spec.id}. "
                'Use tool_choice {"type": "auto"} and describe the tool to use in the prompt.'
            )
        thinking = body.get("thinking") or {}
        if thinking.get("type") in ("enabled", "adaptive"):
            raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
        if not tools:
            raise invalid("tool_choice: tool_choice may only be specified while providing tools.")
    if kind == "tool" and choice.get("name") not in {t.get("name") for t in tools}:
        raise invalid(f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")


def _check_output_config(output_config: Any) -> None:
    if output_config is None:
        return
    if not isinstance(output_config, dict):
        raise invalid("output_config: Input should be an object")
    fmt = output_config.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise invalid("output_config.format.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise invalid("output_config.format.schema: Field required")
    _check_strict_schema(schema, "output_config.format.schema")


def _check_strict_schema(schema: Any, where: str) -> None:
    """Structured outputs and strict tools need closed objects, as the API requires."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            raise invalid(
                f"{where}: For 'object' type, 'additionalProperties' must be explicitly set "
                "to false"
            )
        for key, value in schema.items():
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    _check_strict_schema(sub, f"{where}.{key}.{name}")
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                _check_strict_schema(value, f"{where}.{key}")
            elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
                for k, sub in enumerate(value):
                    _check_strict_schema(sub, f"{where}.{key}.{k}")


def _check_cache_breakpoints(body: dict[str, Any]) -> None:
    found = int(isinstance(body.get("cache_control"), dict))  # automatic caching uses one
    for tool in body.get("tools") or []:
        found += isinstance(tool, dict) and "cache_control" in tool
    system = body.get("system")
    if isinstance(system, list):
        found += sum(isinstance(b, dict) and "cache_control" in b for b in system)
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            found += sum(isinstance(b, dict) and "cache_control" in b for b in content)
    if found > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )
