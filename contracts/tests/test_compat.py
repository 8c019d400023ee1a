"""Breaking-change rules, on hand-made schemas."""

from __future__ import annotations

import copy
from typing import Any

from riverbed_contracts.compat import breaking_changes

NULLABLE_STRING: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
OLD: dict[str, Any] = {
    "type": "object",
    "required": ["type", "data"],
    "properties": {
        "type": {"const": "thing.happened.v1", "type": "string"},
        "subject": NULLABLE_STRING,
        "data": {
            "type": "object",
            "required": ["amount", "tags"],
            "properties": {
                "amount": {"type": "integer"},
                "kind": {"enum": ["a", "b"], "type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "owner": {"anyOf": [{"$ref": "#/$defs/Owner"}, {"type": "null"}]},
            },
        },
    },
    "$defs": {"Owner": {"type": "object", "properties": {"name": {"type": "string"}}}},
}


def changed(edit: Any) -> list[str]:
    new = copy.deepcopy(OLD)
    edit(new)
    return breaking_changes(OLD, new)


def test_an_identical_schema_is_compatible() -> None:
    assert breaking_changes(OLD, copy.deepcopy(OLD)) == []


def test_adding_an_optional_property_is_compatible_at_any_depth() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["data"]["properties"]["note"] = {"type": "string"}
        new["$defs"]["Owner"]["properties"]["email"] = {"type": "string"}
        new["properties"]["data"]["properties"]["amount"]["description"] = "minor units"

    assert changed(edit) == []


def test_removing_a_property_is_breaking() -> None:
    assert changed(lambda new: new["properties"]["data"]["properties"].pop("kind")) == [
        "data.kind: property removed"
    ]


def test_requiring_a_property_is_breaking() -> None:
    assert changed(lambda new: new["properties"]["data"]["required"].append("kind")) == [
        "data.kind: property newly required"
    ]


def test_adding_a_required_property_is_breaking() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["data"]["properties"]["note"] = {"type": "string"}
        new["properties"]["data"]["required"].append("note")

    assert changed(edit) == ["data.note: property newly required"]


def test_no_longer_requiring_a_property_is_breaking() -> None:
    assert changed(lambda new: new["properties"]["data"]["required"].remove("amount")) == [
        "data.amount: property no longer required (consumers rely on it)"
    ]


def test_changing_a_type_is_breaking() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["data"]["properties"]["amount"] = {"type": "number"}

    assert changed(edit) == ["data.amount: type changed from integer to number"]


def test_changing_a_nested_type_is_breaking_inside_arrays_and_refs() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["data"]["properties"]["tags"]["items"] = {"type": "integer"}
        new["$defs"]["Owner"]["properties"]["name"] = {"type": "array"}

    assert changed(edit) == [
        "data.owner.name: type changed from string to array",
        "data.tags[]: type changed from string to integer",
    ]


def test_making_a_property_nullable_or_not_is_breaking() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["subject"] = {"type": "string"}
        new["properties"]["data"]["properties"]["amount"] = {"type": ["integer", "null"]}

    assert changed(edit) == [
        "data.amount: type changed from integer to integer | null",
        "subject: type changed from null | string to string",
    ]


def test_changing_a_const_or_an_enum_is_breaking() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["type"]["const"] = "thing.happened.v2"
        new["properties"]["data"]["properties"]["kind"]["enum"].append("c")

    assert changed(edit) == [
        'data.kind: enum changed from ["a", "b"] to ["a", "b", "c"]',
        'type: const changed from "thing.happened.v1" to "thing.happened.v2"',
    ]


def test_reordering_an_enum_is_compatible() -> None:
    def edit(new: dict[str, Any]) -> None:
        new["properties"]["data"]["properties"]["kind"]["enum"] = ["b", "a"]

    assert changed(edit) == []
