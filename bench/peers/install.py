"""The peers' throwaway installs, under ``var/bench-peers/`` (git-ignored; ``make clean``
removes it): BullMQ with ``npm ci`` from the committed lock file, FastStream in a
virtualenv of the machine's ``python3`` from the pinned requirements. Each is reused while
it matches its pins. ``latest``: the newest BullMQ below 7 and FastStream below 1, in
folders of their own, so that the pinned installs stay as they are.

Either install may fail (no Node, no network): the peer's rows are then skipped, and why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VAR = ROOT / "var" / "bench-peers"
REQUIREMENTS = HERE / "faststream-requirements.txt"
LATEST_BULLMQ = {"bullmq": ">=5 <7", "ioredis": ">=5"}
LATEST_FASTSTREAM = ["faststream[redis]<1", "hiredis", "uvloop"]
INSTALL_TIMEOUT_S = 300


@dataclass
class Peer:
    """One peer ready to run: the command that starts its side script, and its versions;
    or ``skipped`` with the reason."""

    name: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    skipped: str = ""


def _run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(command[:3])} failed: " + " | ".join(tail))
    return done.stdout.strip()


def _package_version(folder: Path, package: str) -> str:
    manifest = folder / "node_modules" / package / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else ""


def bullmq(latest: bool) -> Peer:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return Peer("bullmq", skipped=f"{'node' if not node else 'npm'} not found on PATH")
    folder = VAR / ("bullmq-latest" if latest else "bullmq")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if latest:
            manifest = {"private": True, "dependencies": LATEST_BULLMQ}
            (folder / "package.json").write_text(json.dumps(manifest, indent=2))
            _run([npm, "install", "--no-audit", "--no-fund", "--prefer-online"], folder)
        else:
            pins = json.loads((HERE / "package.json").read_text())["dependencies"]
            if any(_package_version(folder, name) != pin for name, pin in pins.items()):
                for name in ("package.json", "package-lock.json"):
                    shutil.copy(HERE / name, folder / name)
                _run([npm, "ci", "--no-audit", "--no-fund"], folder)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
        return Peer("bullmq", skipped=f"npm install failed ({error})")
    return Peer(
        "bullmq",
        command=[node, str(HERE / "bullmq_side.mjs")],
        env={"BULLMQ_DIR": str(folder)},
        versions={
            "BullMQ": _package_version(folder, "bullmq"),
            "ioredis": _package_version(folder, "ioredis"),
            "Node": _run([node, "--version"]).removeprefix("v"),
        },
    )


_VERSIONS = (
    "import importlib.metadata as m, json, platform; print(json.dumps({'Python': "
    "platform.python_version(), **{n: m.version(n) for n in "
    "('faststream', 'redis', 'hiredis', 'uvloop')}}))"
)


def faststream(latest: bool) -> Peer:
    folder = VAR / ("faststream-latest" if latest else "faststream")
    python = folder / "bin" / "python"
    wanted = LATEST_FASTSTREAM if latest else ["-r", str(REQUIREMENTS)]
    stamp = folder / "installed-from.sha256"
    digest = hashlib.sha256(" ".join(wanted).encode() + REQUIREMENTS.read_bytes()).hexdigest()
    try:
        if latest or not python.exists() or not stamp.exists() or stamp.read_text() != digest:
            shutil.rmtree(folder, ignore_errors=True)
            # the machine's python3, never a downloaded one (UV_PYTHON_DOWNLOADS=never)
            system_python = shutil.which("python3") or sys.executable
            _run([system_python, "-m", "venv", str(folder)])
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run([*pip, *(["--upgrade"] if latest else []), *wanted])
            stamp.write_text(digest)
        versions = json.loads(_run([str(python), "-c", _VERSIONS]))
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as error:
        return Peer("faststream", skipped=f"virtualenv could not be built ({error})")
    return Peer(
        "faststream",
        command=[str(python), str(HERE / "faststream_side.py")],
        versions={
            "FastStream": versions["faststream"],
            "redis-py (FastStream venv)": versions["redis"],
            "hiredis (FastStream venv)": versions["hiredis"],
            "uvloop (FastStream venv)": versions["uvloop"],
        },
    )
