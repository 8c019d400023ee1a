"""Generate, and check, the JSON Schemas and the AsyncAPI document of every event type.

``riverbed-contracts generate`` writes ``contracts/schemas/<type>.json`` (the whole
CloudEvent as it lies in the stream entry, ``data`` being the payload) and
``contracts/asyncapi.json``. ``riverbed-contracts check`` fails when those files
are stale or when the code now describes a breaking change of a committed type;
``check --against REF`` compares with the schemas of a git revision instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# Key names are built in one place, the runtime's ``riverbed.keys``; this
# generator is a development tool and runs in the workspace, where it is installed.
from riverbed import keys
from riverbed_contracts.compat import breaking_changes
from riverbed_contracts.envelope import ENTRY_FIELD, CloudEvent
from riverbed_contracts.registry import REGISTRY, STREAMS, EventSpec

#: the contracts/ directory of this source tree (src/riverbed_contracts/generate.py -> contracts/)
CONTRACTS_DIR = Path(__file__).resolve().parents[2]
SCHEMA_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.json"
# What a Riverbed writer always sets; CloudEvents itself requires id, source, specversion, type.
REQUIRED_ATTRIBUTES = ["data", "id", "source", "specversion", "time", "type"]
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def schema_path(event_type: str) -> str:
    """Path of a type's schema, relative to the contracts directory."""
    return f"{SCHEMA_DIR}/{event_type}.json"


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """Replace ``#/$defs/X`` references by their target, so a schema can be embedded anywhere."""
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline_refs({**defs[ref.removeprefix("#/$defs/")], **siblings}, defs)
    return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}


def self_contained_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of ``model`` with no ``$ref``: embeddable in any document."""
    schema = model.model_json_schema()
    inlined: dict[str, Any] = _inline_refs(schema, schema.get("$defs", {}))
    return inlined


def payload_schema(spec: EventSpec) -> dict[str, Any]:
    return self_contained_schema(spec.model)


def event_schema(spec: EventSpec) -> dict[str, Any]:
    """JSON Schema of a whole event of type ``spec.type``, as the ``event`` entry field holds it."""
    schema = copy.deepcopy(CloudEvent.model_json_schema())
    schema.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:riverbed:contracts:{spec.type}",
            "title": spec.type,
            "description": (
                f"{spec.kind.capitalize()}: {spec.description} "
                f"CloudEvents 1.0 structured-mode JSON, the value of the {ENTRY_FIELD!r} field "
                f"of an entry of the Redis stream {keys.stream_key(spec.stream)!r}."
            ),
            "required": REQUIRED_ATTRIBUTES,
        }
    )
    schema["properties"]["type"] = {"const": spec.type, "title": "Type", "type": "string"}
    schema["properties"]["data"] = payload_schema(spec)
    return schema


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0: one channel per stream (address = its key), one message per type."""

    def ident(name: str) -> str:  # AsyncAPI ids allow [A-Za-z0-9_-] only
        return name.replace(".", "_")

    channels: dict[str, Any] = {}
    for stream in STREAMS:
        specs = [spec for spec in REGISTRY.values() if spec.stream == stream]
        key = keys.stream_key(stream)
        tag = "{" + stream + "}"
        channels[ident(stream)] = {
            # Braces in an AsyncAPI address delimit a parameter, so the hash tag that
            # the real key spells with literal braces comes in through one.
            "address": key.replace(tag, "{tag}"),
            "parameters": {
                "tag": {
                    "enum": [tag],
                    "default": tag,
                    "description": "Redis Cluster hash tag: the logical stream name in braces",
                }
            },
            "title": stream,
            "description": (
                f"Redis stream `{key}` of the logical stream `{stream}`. Each entry's "
                f"`{ENTRY_FIELD}` field holds the message: a CloudEvents 1.0 structured-mode "
                "JSON document. A retry is appended again with the fields `group` (the only "
                "consumer group that handles it), `attempt` and `first_seen` (ms since the "
                "epoch). Entries that failed for good move to the "
                f"dead-letter stream `{keys.dead_letter_key(stream)}`."
            ),
            "messages": {
                ident(spec.type): {"$ref": f"#/components/messages/{ident(spec.type)}"}
                for spec in specs
            },
            "x-riverbed-entry-field": ENTRY_FIELD,
            "x-riverbed-stream-key": key,
            "x-riverbed-dead-letter-address": keys.dead_letter_key(stream),
        }
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for spec in REGISTRY.values():
        schema = event_schema(spec)
        del schema["$schema"], schema["$id"]  # embedded: the document is the context
        schemas[ident(spec.type)] = schema
        messages[ident(spec.type)] = {
            "name": spec.type,
            "title": spec.model.__name__,
            "summary": spec.description,
            "contentType": STRUCTURED_CONTENT_TYPE,
            "correlationId": {"location": "$message.payload#/correlationid"},
            "payload": {"$ref": f"#/components/schemas/{ident(spec.type)}"},
            "x-riverbed-kind": spec.kind,
            "x-riverbed-access": spec.access,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Riverbed events",
            "version": version("riverbed-contracts"),
            "description": (
                "Every stream of Riverbed and the event types on it. Generated by "
                "`riverbed-contracts generate` from the riverbed_contracts package; do not edit."
            ),
        },
        "defaultContentType": STRUCTURED_CONTENT_TYPE,
        "servers": {
            "redis": {
                "host": "127.0.0.1:6379",
                "protocol": "redis",
                "description": "Any Redis 7.0+; services take its URL from REDIS_URL.",
            }
        },
        "channels": channels,
        "operations": _operations(ident),
        "components": {"messages": messages, "schemas": schemas},
    }


def _operations(ident: Callable[[str], str]) -> dict[str, Any]:
    """Who sends and who receives each channel: ``send`` by every service that may produce
    a type (the gateway for public types, its inbound webhooks for provider types),
    ``receive`` by every service that consumes the stream."""
    senders: dict[tuple[str, str], list[str]] = {}  # (service, stream) -> types it sends
    receivers: dict[tuple[str, str], None] = {}
    for spec in REGISTRY.values():
        producers = list(spec.producers)
        if spec.access in ("public", "provider"):
            producers.append("gateway")
        for service in producers:
            senders.setdefault((service, spec.stream), []).append(spec.type)
        for service in spec.consumers:
            receivers[(service, spec.stream)] = None
    operations: dict[str, Any] = {}
    for (service, stream), types in sorted(senders.items()):
        operations[f"{service}_sends_{ident(stream)}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{ident(stream)}"},
            "messages": [
                {"$ref": f"#/channels/{ident(stream)}/messages/{ident(t)}"} for t in types
            ],
            "summary": f"{service} appends {', '.join(types)} to {stream}",
            "x-riverbed-service": service,
        }
    for service, stream in sorted(receivers):
        operations[f"{service}_receives_{ident(stream)}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{ident(stream)}"},
            "summary": f"{service} consumes {stream} in its consumer group {service!r}",
            "x-riverbed-service": service,
        }
    return operations


def render(document: Mapping[str, Any]) -> str:
    """Deterministic text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generated_files() -> dict[str, str]:
    """Every generated file: path relative to the contracts directory -> content."""
    files = {schema_path(spec.type): render(event_schema(spec)) for spec in REGISTRY.values()}
    files[ASYNCAPI_FILE] = render(asyncapi_document())
    return files


def stale_files(root: Path) -> list[str]:
    """Generated files missing on disk or different from what the code generates now."""
    stale = []
    for path, content in generated_files().items():
        on_disk = root / path
        if not on_disk.is_file() or on_disk.read_text(encoding="utf-8") != content:
            stale.append(path)
    return stale


def committed_schemas_on_disk(root: Path) -> dict[str, dict[str, Any]]:
    """The schemas in ``root/schemas``, by event type."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((root / SCHEMA_DIR).glob("*.json"))
    }


def committed_schemas_in_git(root: Path, revision: str) -> dict[str, dict[str, Any]]:
    """The schemas in ``root/schemas`` as of git ``revision`` (empty if it had none)."""

    def git(*args: str) -> str:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", *args],  # noqa: S607 - git from PATH, like any developer tool
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    listed = git("ls-tree", "--name-only", revision, f"{SCHEMA_DIR}/").split()
    return {
        Path(path).name.removesuffix(".json"): json.loads(git("show", f"{revision}:./{path}"))
        for path in listed
        if path.endswith(".json")
    }


def breaking(committed: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Breaking changes between committed schemas and what the code generates now."""
    problems = []
    for event_type, old in sorted(committed.items()):
        if event_type not in REGISTRY:
            problems.append(f"{event_type}: event type removed (its schema is committed)")
            continue
        for change in breaking_changes(old, event_schema(REGISTRY[event_type])):
            problems.append(f"{event_type}: {change}")
    return problems


BREAKING_HELP = (
    "Within a version only additive, optional changes are allowed. Keep the old type and "
    "register a new version (e.g. email.requested.v2) for the new shape."
)


def generate(root: Path) -> int:
    problems = breaking(committed_schemas_on_disk(root))
    if problems:
        print("refusing to overwrite committed schemas with breaking changes:", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        print(BREAKING_HELP, file=sys.stderr)
        return 1
    written = 0
    for path, content in generated_files().items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            written += 1
            print(f"wrote {target}")
    print(f"{written} file(s) written, {len(generated_files()) - written} unchanged")
    return 0


def check(root: Path, against: str | None) -> int:
    failed = False
    stale = stale_files(root)
    if stale:
        failed = True
        print(f"stale generated contract files in {root}:", file=sys.stderr)
        print("\n".join(f"  {path}" for path in stale), file=sys.stderr)
        print("run: uv run riverbed-contracts generate", file=sys.stderr)
    committed = (
        committed_schemas_on_disk(root)
        if against is None
        else committed_schemas_in_git(root, against)
    )
    problems = breaking(committed)
    if problems:
        failed = True
        baseline = "the schemas on disk" if against is None else f"git revision {against}"
        print(f"breaking changes against {baseline}:", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        print(BREAKING_HELP, file=sys.stderr)
    if not failed:
        print(f"contracts up to date: {len(REGISTRY)} event types, {len(STREAMS)} streams")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="riverbed-contracts", description="JSON Schemas and AsyncAPI of Riverbed's events"
    )
    parser.add_argument(
        "--dir", type=Path, default=CONTRACTS_DIR, help="contracts directory (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("generate", help="write schemas/*.json and asyncapi.json")
    checking = commands.add_parser("check", help="fail when generated files are stale or breaking")
    checking.add_argument(
        "--against", metavar="REV", help="compare with the schemas of this git revision"
    )
    args = parser.parse_args(argv)
    if args.command == "generate":
        return generate(args.dir)
    return check(args.dir, args.against)


if __name__ == "__main__":
    sys.exit(main())
