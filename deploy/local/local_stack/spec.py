"""What ``make run`` starts for each service, read from the service's own ``pyproject.toml``.

Each ``services/<name>/pyproject.toml`` with a ``[tool.riverbed.local]`` table is a service
the launcher starts, in the order of their ports. The table (every key is commented in the
services' files; the email service's shows a sink, the gateway's examples):

- ``script``: the console script to run; ``port``: its default port, overridden by
  ``<env_prefix>PORT``; ``health``, ``ready``, ``metrics``: the paths of its probes.
- ``keys``: ``{VARIABLE = "name in messages"}``, the keys the service gets (and no other
  key the launcher hands out). Each is the variable's value, else a fresh random key,
  printed. ``own_keys``: those that must equal no other key (an admin API's).
- ``env``: variables given unless the environment sets them; ``paths``: variables set to a
  path inside the service's folder, when the path exists and the environment sets none.
- ``sink``: a local stand-in for something outside (a mail relay), started before the
  service, whose ``env`` is then given to it.
- ``examples``: commands printed once everything runs.

Values are ``string.Template``s: ``${host}`` (127.0.0.1), ``${port}``, ``${var}`` (the
checkout's ``var/``, absolute), ``${key}`` (an example's key, or ``$VARIABLE`` when it came
from the environment), ``${relay}`` (a skipped sink's ``unless`` variable's value).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
VAR = ROOT / "var"
HOST = "127.0.0.1"


def fill(template: str, **values: str | int | Path) -> str:
    """``template`` with its ``${name}`` placeholders replaced (a missing one is an error)."""
    return Template(template).substitute({name: str(v) for name, v in values.items()})


@dataclass(frozen=True)
class SinkSpec:
    """A helper process a service talks to locally instead of a real one (an SMTP relay)."""

    name: str  # the process's name in messages, and its log: var/log/<name>.log
    title: str  # how messages name it ("mail sink")
    module: str  # run as ``python -m <module> <args>``
    args: tuple[str, ...]
    default_port: int  # a free one when this is taken
    greeting: bytes  # it is up once a TCP connection is greeted with these bytes
    unless: str  # not started when this variable is set (names a real one)
    env: Mapping[str, str]  # given to the service when the sink runs, over its own
    started: str  # printed once it answers
    skipped: str  # printed when ``unless`` is set


@dataclass(frozen=True)
class Example:
    """A command printed for the developer once the stack runs (a curl)."""

    title: str
    key: str  # the key variable whose value ${key} stands for
    command: str


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # its folder under services/
    folder: Path
    script: str
    prefix: str  # its settings' env prefix, "GATEWAY_"
    default_port: int
    health: str
    ready: str
    metrics: str
    keys: Mapping[str, str]
    own_keys: tuple[str, ...]
    env: Mapping[str, str]
    paths: Mapping[str, str]
    sink: SinkSpec | None
    examples: tuple[Example, ...]


def _need(table: Mapping[str, Any], key: str, where: Path) -> Any:
    if key not in table:
        raise SystemExit(f"[run] {where}: [tool.riverbed.local] has no '{key}'")
    return table[key]


def _sink(table: Mapping[str, Any], where: Path) -> SinkSpec:
    return SinkSpec(
        name=_need(table, "name", where),
        title=_need(table, "title", where),
        module=_need(table, "module", where),
        args=tuple(_need(table, "args", where)),
        default_port=int(_need(table, "port", where)),
        greeting=str(_need(table, "greeting", where)).encode(),
        unless=_need(table, "unless", where),
        env=dict(table.get("env", {})),
        started=_need(table, "started", where),
        skipped=_need(table, "skipped", where),
    )


def load_service(pyproject: Path) -> ServiceSpec | None:
    """The ``[tool.riverbed.local]`` table of ``pyproject``; None when it has none."""
    with pyproject.open("rb") as file:
        table = tomllib.load(file).get("tool", {}).get("riverbed", {}).get("local")
    if table is None:
        return None
    return ServiceSpec(
        name=pyproject.parent.name,
        folder=pyproject.parent,
        script=_need(table, "script", pyproject),
        prefix=_need(table, "env_prefix", pyproject),
        default_port=int(_need(table, "port", pyproject)),
        health=_need(table, "health", pyproject),
        ready=_need(table, "ready", pyproject),
        metrics=_need(table, "metrics", pyproject),
        keys=dict(table.get("keys", {})),
        own_keys=tuple(table.get("own_keys", ())),
        env=dict(table.get("env", {})),
        paths=dict(table.get("paths", {})),
        sink=_sink(table["sink"], pyproject) if "sink" in table else None,
        examples=tuple(Example(**example) for example in table.get("examples", ())),
    )


def load_services(root: Path = ROOT) -> tuple[ServiceSpec, ...]:
    """Every service under ``root/services`` that declares how to run it locally, by port."""
    found = (load_service(path) for path in sorted(root.glob("services/*/pyproject.toml")))
    return tuple(sorted((s for s in found if s is not None), key=lambda s: s.default_port))
