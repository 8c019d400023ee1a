"""Every owner of Redis keys (the runtime, each service) keeps to prefixes no other owner's
keys start with, so that one owner's SCAN, ACL pattern or cleanup never reaches another's."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from types import ModuleType

import pytest

import riverbed_email.keys
import riverbed_gateway.keys
import riverbed_payments.keys
import riverbed_webhooks.keys
from riverbed import keys as runtime_keys

SERVICE_KEYS: dict[str, ModuleType] = {
    "gateway": riverbed_gateway.keys,
    "email": riverbed_email.keys,
    "payments": riverbed_payments.keys,
    "webhooks": riverbed_webhooks.keys,
}

#: owner -> the prefixes its keys start with
PREFIXES: dict[str, tuple[str, ...]] = {
    "riverbed": runtime_keys.RUNTIME_KEY_PREFIXES,
    **{owner: (module.KEY_PREFIX,) for owner, module in SERVICE_KEYS.items()},
}


def _key_builders(module: ModuleType) -> list[Callable[..., str]]:
    """The key-naming functions a keys module defines itself: not the helpers it imports,
    nor ``owned_key``, which names whatever key its caller's prefix makes."""
    return [
        function
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if name.endswith("_key")
        and function.__module__ == module.__name__
        and function is not runtime_keys.owned_key
    ]


def _sample_key(build: Callable[..., str]) -> str:
    """The key ``build`` names for placeholder arguments (only the required ones)."""
    required = [
        parameter
        for parameter in inspect.signature(build).parameters.values()
        if parameter.default is inspect.Parameter.empty
    ]
    return build(*(f"sample{index}" for index, _ in enumerate(required)))


def test_no_owners_prefix_is_a_prefix_of_another_owners() -> None:
    owned = [(owner, prefix) for owner, prefixes in PREFIXES.items() for prefix in prefixes]
    collisions = [
        f"{first} {a!r} / {second} {b!r}"
        for (first, a), (second, b) in combinations(owned, 2)
        if first != second and (a.startswith(b) or b.startswith(a))
    ]
    assert collisions == []


@pytest.mark.parametrize("owner", sorted(PREFIXES))
def test_every_key_an_owner_names_starts_with_one_of_its_prefixes(owner: str) -> None:
    module = runtime_keys if owner == "riverbed" else SERVICE_KEYS[owner]
    builders = _key_builders(module)
    assert builders, f"no key functions found in {module.__name__}"
    outside = [
        f"{build.__name__}: {key!r}"
        for build in builders
        if not (key := _sample_key(build)).startswith(PREFIXES[owner])
    ]
    assert outside == []


def test_the_key_layout_page_names_every_services_key() -> None:
    """docs/keys.md is where an operator looks a key up: every key a service names (its
    shape, with the variable parts as placeholders) must have a row there."""
    page = (Path(__file__).parents[1] / "docs" / "keys.md").read_text()
    missing = []
    for owner, module in SERVICE_KEYS.items():
        for build in _key_builders(module):
            fixed_part = _sample_key(build).split("sample")[0].rstrip("{")
            if f"`{fixed_part}" not in page:
                missing.append(f"{owner}: {build.__name__} ({fixed_part}…)")
    assert not missing, f"keys missing from docs/keys.md: {missing}"
