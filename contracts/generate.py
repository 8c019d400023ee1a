"""``python contracts/generate.py`` (``make contracts``): generate, and check, the committed
JSON Schemas and AsyncAPI document of every event type (rendered by :mod:`riverbed.schemas`).
A development tool beside the contracts package, not part of any shipped package.

``generate`` writes ``contracts/schemas/<type>.json`` (the whole
CloudEvent as it lies in the stream entry, ``data`` being the payload) and
``contracts/asyncapi.json``. ``check`` fails when those files
are stale or when the code now describes a breaking change of a committed type;
``check --against REF`` compares with the schemas of a git revision instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from riverbed.schemas import asyncapi_document, event_schema
from riverbed_contracts.compat import breaking_changes
from riverbed_contracts.registry import REGISTRY, STREAMS

#: the contracts/ directory of this source tree (riverbed/src/riverbed/ -> the workspace root)
CONTRACTS_DIR = Path(__file__).resolve().parent
SCHEMA_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.json"


def schema_path(event_type: str) -> str:
    """Path of a type's schema, relative to the contracts directory."""
    return f"{SCHEMA_DIR}/{event_type}.json"


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
        print("run: make contracts", file=sys.stderr)
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
        prog="contracts/generate.py", description="JSON Schemas and AsyncAPI of Riverbed's events"
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
