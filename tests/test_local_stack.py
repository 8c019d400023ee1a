"""``make run``'s launcher in check mode: Redis and every service come up, then all go away.

Runs ``deploy/local/run.py --check --strict`` as a user would, with REDIS_URL unset
(so the launcher starts its own redis-server under var/) and each service on a free
loopback port, then checks that nothing it started is still running.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from riverbed.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "deploy" / "local" / "run.py"
LOCK = ROOT / "var" / "run.lock"  # the launcher's one-per-checkout lock
PORT_VARIABLES = {
    "gateway": "GATEWAY_PORT",
    "email": "EMAIL_PORT",
    "webhooks": "WEBHOOKS_PORT",
    "payments": "PAYMENTS_PORT",
}
MARKER = "RIVERBED_LOCAL_STACK_TEST"  # env var every child of the launcher inherits
READINESS_TIMEOUT = 60  # s, the launcher's --timeout
# s: readiness, plus up to 35 s of service drain and 10 s of Redis shutdown
LAUNCHER_DEADLINE = 150
EXPORTER_BINARIES = ("prometheus-redis-exporter", "redis_exporter")
EXPORTER_ON_PATH = any(shutil.which(name) for name in EXPORTER_BINARIES)


def port_is_free(port: int) -> bool:
    """As the launcher and servers judge it: a port in TIME_WAIT counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def processes_carrying(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (ours, via inheritance)."""
    wanted = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until true or ``timeout`` s have passed; the last answer."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(0.05)
    return True


def wait_for_launcher_lock(timeout: float) -> bool:
    """Whether var/run.lock is free (another ``make run`` may hold it for a while)."""
    if not LOCK.exists():
        return True

    def free() -> bool:
        with open(LOCK, "a") as lock:  # "a": never truncate another launcher's file
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(lock, fcntl.LOCK_UN)
            return True

    return wait_until(free, timeout)


def run_launcher(env: dict[str, str]) -> tuple[int, str]:
    """Run the launcher to its end; on overrun, SIGTERM it so it stops its children."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(LAUNCHER),
            "--check",
            "--strict",
            "--timeout",
            str(READINESS_TIMEOUT),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=LAUNCHER_DEADLINE)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"the launcher ran past {LAUNCHER_DEADLINE}s:\n{output}")
    return process.returncode, output


@pytest.mark.integration
@pytest.mark.timeout(LAUNCHER_DEADLINE + 90)
def test_check_mode_brings_every_service_to_ready_then_leaves_nothing_running() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("the launcher starts its own Redis when REDIS_URL is unset: needs redis-server")
    if not Path("/proc").is_dir():
        pytest.skip("finding leftover processes reads /proc (Linux)")
    if not wait_for_launcher_lock(timeout=30):
        pytest.skip(f"another launcher holds {LOCK} (a 'make run' in this checkout?)")

    ports = {name: free_port() for name in PORT_VARIABLES}
    token = uuid.uuid4().hex
    marker = f"{MARKER}={token}"
    # no key chosen: the launcher generates and prints the gateway's two keys
    chosen = ("REDIS_URL", "RIVERBED_API_KEY", "GATEWAY_ADMIN_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in chosen}
    env.update({PORT_VARIABLES[name]: str(port) for name, port in ports.items()})
    env[MARKER] = token

    try:
        code, output = run_launcher(env)
        if "already using" in output and code != 0:
            pytest.skip(f"another launcher took {LOCK} meanwhile:\n{output}")

        assert code == 0, f"the launcher's check failed (exit {code}):\n{output}"
        started_redis = re.search(r"Redis redis://127\.0\.0\.1:(\d+)/0 started", output)
        assert started_redis, f"with REDIS_URL unset the launcher must start Redis:\n{output}"
        for name, port in ports.items():
            assert f"{name:<9} http://127.0.0.1:{port}/healthz" in output, output
            assert re.search(rf"^\[run\] check {name}: ready\b", output, re.MULTILINE), output
        assert "[run] check passed" in output, output
        printed = {
            variable: re.search(rf"generated .*\(set {variable} to choose one\): (\S+)", output)
            for variable in ("RIVERBED_API_KEY", "GATEWAY_ADMIN_API_KEY")
        }
        assert all(printed.values()), f"the ingestion and the admin key are printed:\n{output}"
        keys = {match.group(1) for match in printed.values() if match}
        assert len(keys) == 2, "two keys, never one for both"
        exporter = re.search(
            r"^\[run\] redis exporter http://127\.0\.0\.1:(\d+)/metrics", output, re.M
        )
        if EXPORTER_ON_PATH:  # started, printed, and watching the launcher's Redis
            assert exporter, f"the exporter is on PATH: it must be started:\n{output}"
            assert "[run] check redis exporter: redis_up 1" in output, output
        else:
            assert exporter is None
            assert "apt-get install prometheus-redis-exporter" in output, output

        # The launcher waited for its children; give grandchildren a moment to follow.
        left = wait_until(lambda: not processes_carrying(marker), timeout=10)
        assert left, f"processes left running: {processes_carrying(marker)}\n{output}"
        used = {**ports, "redis": int(started_redis.group(1))}
        if exporter:
            used["redis exporter"] = int(exporter.group(1))
        busy = {name: port for name, port in used.items() if not port_is_free(port)}
        assert not busy, f"ports still taken after the launcher exited: {busy}\n{output}"
    finally:
        # Never leave a stray server behind, even when an assertion above failed.
        for pid in processes_carrying(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _exporter_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The launcher's exporter part, imported as the launcher imports it."""
    monkeypatch.syspath_prepend(str(LAUNCHER.parent))
    return importlib.import_module("local_stack.exporter")


def test_without_the_exporter_binary_one_line_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exporter = _exporter_module(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no exporter on it
    started = exporter.start_exporter("redis://127.0.0.1:1/0", exporter.Stop())
    assert started is None
    [line] = capsys.readouterr().out.splitlines()
    assert "prometheus-redis-exporter" in line
    assert "apt-get install prometheus-redis-exporter" in line


@pytest.mark.parametrize("port", ["http", "0", "70000"])
def test_a_redis_exporter_port_that_is_no_port_is_refused_saying_what_is_accepted(
    port: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exporter = _exporter_module(monkeypatch)
    monkeypatch.setenv("REDIS_EXPORTER_PORT", port)
    assert exporter.choose_port() is None
    assert f"REDIS_EXPORTER_PORT={port!r} is not a port (1-65535)" in capsys.readouterr().out
