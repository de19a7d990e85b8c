"""What the fake model says: plain text, JSON for structured outputs, or a tool call — derived from a seed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmtap.fake_openai.errors import invalid
from llmtap.fake_openai.schema import instance
from llmtap.fake_openai.text import answer_length, count_words, seed_of, sentence


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str


@dataclass(frozen=True)
class Answer:
    text: str | None
    """The visible content; None when the model calls a tool."""
    tool_call: ToolCall | None
    truncated: bool
    """Cut by max tokens (finish_reason "length", Responses status "incomplete")."""

    @property
    def words(self) -> int:
        """Output tokens of the visible answer (the fake tokenizer counts words)."""
        if self.tool_call is not None:
            return 1 + count_words(self.tool_call.arguments)
        return count_words(self.text or "")

    @property
    def finish_reason(self) -> str:
        if self.tool_call is not None:
            return "tool_calls"
        return "length" if self.truncated else "stop"


@dataclass(frozen=True)
class Format:
    """The requested output format: free text, any JSON object, or JSON valid against ``schema``."""

    kind: str = "text"
    schema: dict | None = None


def output_format(kind: Any, spec: Any, type_param: str, spec_param: str) -> Format:
    """The requested format; ``spec`` carries ``name`` and ``schema`` (chat: response_format.json_schema,
    responses: text.format), the params name them in errors."""
    if kind == "json_schema":
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise invalid(
                f"Missing required parameter: '{spec_param}.name'.",
                f"{spec_param}.name",
                "missing_required_parameter",
            )
        return Format("json_schema", spec.get("schema") or {})
    if kind in ("text", "json_object"):
        return Format(kind)
    raise invalid(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
        type_param,
        "invalid_value",
    )


def compose(seed: int, output: Format, tool: dict | None, max_tokens: int | None) -> Answer:
    """The answer for one choice. ``tool`` is a function definition (name, parameters) the model calls."""
    if tool is not None:
        arguments = json.dumps(instance(tool.get("parameters") or {"type": "object"}, seed))
        return Answer(None, ToolCall(tool["name"], arguments), False)
    if output.kind == "json_schema":
        text = json.dumps(instance(output.schema or {}, seed))
    elif output.kind == "json_object":
        text = json.dumps({"answer": sentence(seed, answer_length(seed))})
    else:
        text = sentence(seed, answer_length(seed))
    return _limit(text, max_tokens)


def _limit(text: str, max_tokens: int | None) -> Answer:
    """Cut to ``max_tokens`` words like the real API: the caller gets a partial answer, not an error."""
    if max_tokens is None or count_words(text) <= max_tokens:
        return Answer(text, None, False)
    return Answer(" ".join(text.split()[:max_tokens]), None, True)


def choose_tool(tools: list[dict], tool_choice: Any, last_role: str | None, seed: int) -> dict | None:
    """Which function the model calls, if any: an agent loop calls a tool, then answers from its result."""
    if not tools or tool_choice == "none":
        return None
    by_name = {tool["name"]: tool for tool in tools}
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        if name is not None:
            if name not in by_name:
                raise invalid(
                    f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.",
                    "tool_choice",
                    "invalid_value",
                )
            return by_name[name]
    elif tool_choice in (None, "auto") and last_role in ("tool", "function", "function_call_output"):
        return None
    return tools[seed_of(seed, "tool") % len(tools)]
