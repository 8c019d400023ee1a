"""Is a new JSON Schema a compatible successor of an old one within one version?

Within a version, old and new producers and consumers run side by side during a
rolling deployment, so a change must be safe in both directions. Breaking:

- a property removed (old consumers still read it);
- a property newly required, or no longer required (old producers do not send
  it; old consumers rely on it);
- a type changed, at any depth, nullability included (``string`` ->
  ``string | null`` breaks an old consumer as surely as ``string`` -> ``integer``);
- a ``const`` or ``enum`` changed (an old consumer rejects a new value).

Fine: a new optional property, descriptions, titles, examples, defaults.
Not checked: tighter value constraints (pattern, length, range). Review those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

Schema = Mapping[str, Any]


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Why ``new`` cannot replace ``old`` in the same version; empty when it can."""
    found: list[str] = []
    _compare(old, new, path="", old_root=old, new_root=new, found=found)
    return found


def _compare(
    old: Schema, new: Schema, *, path: str, old_root: Schema, new_root: Schema, found: list[str]
) -> None:
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    where = path or "(root)"

    for keyword in ("const", "enum"):
        if _canonical(old, keyword) != _canonical(new, keyword):
            found.append(
                f"{where}: {keyword} changed from {_show(old.get(keyword))} "
                f"to {_show(new.get(keyword))}"
            )
    old_types, new_types = _types(old, old_root), _types(new, new_root)
    if old_types is not None and new_types is not None and old_types != new_types:
        found.append(
            f"{where}: type changed from {' | '.join(sorted(old_types))} "
            f"to {' | '.join(sorted(new_types))}"
        )

    def recurse(old_sub: Any, new_sub: Any, sub_path: str) -> None:
        if isinstance(old_sub, Mapping) and isinstance(new_sub, Mapping):
            _compare(
                old_sub, new_sub, path=sub_path, old_root=old_root, new_root=new_root, found=found
            )

    old_object, new_object = _branch(old, "object", old_root), _branch(new, "object", new_root)
    if old_object is not None and new_object is not None:
        old_properties = old_object.get("properties", {})
        new_properties = new_object.get("properties", {})
        old_required = set(old_object.get("required", ()))
        new_required = set(new_object.get("required", ()))
        prefix = f"{path}." if path else ""
        for name in sorted(old_properties.keys() - new_properties.keys()):
            found.append(f"{prefix}{name}: property removed")
        for name in sorted(new_required - old_required):
            found.append(f"{prefix}{name}: property newly required")
        for name in sorted(old_required - new_required):
            found.append(f"{prefix}{name}: property no longer required (consumers rely on it)")
        for name in sorted(old_properties.keys() & new_properties.keys()):
            recurse(old_properties[name], new_properties[name], f"{prefix}{name}")
        recurse(
            old_object.get("additionalProperties"),
            new_object.get("additionalProperties"),
            f"{path}{{*}}",
        )

    old_array, new_array = _branch(old, "array", old_root), _branch(new, "array", new_root)
    if old_array is not None and new_array is not None:
        recurse(old_array.get("items"), new_array.get("items"), f"{path}[]")


def _resolve(schema: Schema, root: Schema) -> Schema:
    """Follow a local ``$ref`` (``#/$defs/Name``); sibling keywords win over the target's."""
    seen: set[str] = set()
    while isinstance(ref := schema.get("$ref"), str):
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot follow $ref {ref!r}: only local, acyclic refs are supported")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _alternatives(schema: Schema, root: Schema) -> list[Schema] | None:
    """The branches of a union (``anyOf``/``oneOf``) that carries no ``type`` of its own."""
    if "type" in schema:
        return None
    branches = schema.get("anyOf") or schema.get("oneOf")
    if not branches:
        return None
    return [_resolve(branch, root) for branch in branches]


def _types(schema: Schema, root: Schema) -> frozenset[str] | None:
    """The JSON types a schema admits, or None when it does not say."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    branches = _alternatives(schema, root)
    if branches is None:
        return None
    union: set[str] = set()
    for branch in branches:
        types = _types(branch, root)
        if types is None:
            return None
        union |= types
    return frozenset(union)


def _branch(schema: Schema, json_type: str, root: Schema) -> Schema | None:
    """The part of ``schema`` that describes values of ``json_type`` (for nullable unions)."""
    shape_keyword = {"object": "properties", "array": "items"}[json_type]
    declared = schema.get("type")
    if (
        shape_keyword in schema
        or declared == json_type
        or (isinstance(declared, list) and json_type in declared)
    ):
        return schema
    for branch in _alternatives(schema, root) or ():
        found = _branch(branch, json_type, root)
        if found is not None:
            return found
    return None


def _canonical(schema: Schema, keyword: str) -> str | None:
    """Order-insensitive form of a ``const`` or ``enum``; None when absent (not JSON null)."""
    if keyword not in schema:
        return None
    value = schema[keyword]
    if keyword == "enum" and isinstance(value, list):
        return json.dumps(sorted(json.dumps(item, sort_keys=True) for item in value))
    return json.dumps(value, sort_keys=True)


def _show(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, sort_keys=True)
