"""The keys ``make run`` hands out: each service gets its own and no other."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .processes import say
from .spec import ServiceSpec


def choose_key(variable: str, what: str) -> tuple[str, str]:
    """The key in ``variable``, else a fresh random one (printed); and how a printed curl
    spells it."""
    key = os.environ.get(variable, "")
    if key:
        say(f"{what} from {variable}")
        return key, f"${variable}"
    key = secrets.token_urlsafe(32)
    say(f"generated {what} (set {variable} to choose one): {key}")
    return key, key


@dataclass(frozen=True)
class Keys:
    values: Mapping[str, str]  # variable -> key
    for_curl: Mapping[str, str]  # variable -> how a printed command spells it


def choose_keys(services: Iterable[ServiceSpec]) -> Keys:
    """Every key some service declares, in the order they are first declared."""
    values: dict[str, str] = {}
    for_curl: dict[str, str] = {}
    for spec in services:
        for variable, what in spec.keys.items():
            if variable not in values:
                values[variable], for_curl[variable] = choose_key(variable, what)
    return Keys(values, for_curl)


def shared_own_key(services: Iterable[ServiceSpec], keys: Keys) -> str | None:
    """Why the keys cannot be used: an own key (an admin API's) equal to another key, so
    that whoever holds the other could administer that service; None when all is well."""
    for spec in services:
        for variable in spec.own_keys:
            key = keys.values[variable]
            same = sorted(v for v, k in keys.values.items() if v != variable and k == key)
            if same:
                return f"{variable} must be a key of its own, not the same as {', '.join(same)}"
    return None


def keyed_environment(
    base: Mapping[str, str], spec: ServiceSpec, keys: Mapping[str, str], every_key: Iterable[str]
) -> dict[str, str]:
    """``base`` holding only the keys ``spec`` declares (those ``keys`` has): every other key
    variable in ``every_key`` is dropped, so an admin API never gets the ingestion key."""
    dropped = set(every_key)
    env = {name: value for name, value in base.items() if name not in dropped}
    env.update({variable: keys[variable] for variable in spec.keys if variable in keys})
    return env
