"""Structured outputs: the fake model's JSON always validates against the requested schema."""

from __future__ import annotations

import datetime
import uuid
from typing import Literal

import jsonschema
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llmtap.fake_openai.schema import instance


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree]
    parent: Tree | None


class Event(pydantic.BaseModel):
    id: uuid.UUID
    at: datetime.datetime
    day: datetime.date
    kind: Literal["meeting", "call"]
    attendees: list[str] = pydantic.Field(min_length=2, max_length=4)
    score: float = pydantic.Field(ge=0.5, le=0.75)
    count: int = pydantic.Field(gt=10, lt=12)
    code: str = pydantic.Field(min_length=12, max_length=12)
    metadata: dict[str, int]
    tree: Tree
    pair: tuple[int, str]
    flag: bool | None


SCHEMAS = {
    "pydantic": Event.model_json_schema(),
    "allOf": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer", "multipleOf": 7, "minimum": 20}}, "required": ["b"]},
        ]
    },
    "const-and-enum": {
        "type": "object",
        "properties": {"version": {"const": 2}, "color": {"enum": ["red", "green", 3]}},
        "required": ["version", "color"],
    },
    "types-list": {"type": ["null", "number"], "exclusiveMinimum": 1, "exclusiveMaximum": 2},
    "untyped": {},
    "array-of-refs": {
        "type": "array",
        "minItems": 3,
        "items": {"$ref": "#/$defs/point"},
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
    },
    "formats": {
        "type": "object",
        "properties": {
            name: {"type": "string", "format": name} for name in ("email", "uri", "date-time", "ipv4")
        },
    },
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_instance_validates(name: str) -> None:
    schema = SCHEMAS[name]
    value = instance(schema, 42)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert instance(schema, 42) == value  # deterministic


def test_instance_parses_into_the_pydantic_model() -> None:
    event = Event.model_validate(instance(Event.model_json_schema(), 7))
    assert isinstance(event.tree, Tree)


def test_recursive_schema_terminates() -> None:
    value = instance(Tree.model_json_schema(), 1)
    depth = 0
    while value["children"]:
        value, depth = value["children"][0], depth + 1
    assert 1 <= depth <= 10


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_seed_gives_a_valid_instance(seed: int) -> None:
    Event.model_validate(instance(Event.model_json_schema(), seed))


def test_seeds_vary_the_answer() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    assert len({instance(schema, seed)["name"] for seed in range(20)}) > 5
