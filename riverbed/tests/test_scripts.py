"""The runtime's Lua scripts load from package data, each with its header comment."""

from __future__ import annotations

from importlib import resources

import pytest

from riverbed.scripts import RUNTIME_SCRIPTS, LuaScript

_NAMES = sorted(
    entry.name.removesuffix(".lua")
    for entry in resources.files(RUNTIME_SCRIPTS).iterdir()
    if entry.name.endswith(".lua")
)


def test_the_runtime_ships_its_scripts() -> None:
    assert {"consumer_claim", "delay_promote", "cache_lookup", "ratelimit_gcra"} <= set(_NAMES)


@pytest.mark.parametrize("name", _NAMES)
def test_each_script_loads_and_says_what_it_takes(name: str) -> None:
    script = LuaScript.load(RUNTIME_SCRIPTS, name)
    header = [line for line in script.source.splitlines() if line.startswith("--")]
    assert script.source.startswith("--")
    assert any("KEYS" in line for line in header), f"{name}.lua names no KEYS in its header"


def test_a_missing_script_is_an_error_at_load() -> None:
    with pytest.raises(FileNotFoundError):
        LuaScript.load(RUNTIME_SCRIPTS, "no_such_script")
