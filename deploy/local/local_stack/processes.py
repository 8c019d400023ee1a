"""Starting, probing and stopping the launcher's processes: Redis, sinks and services."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from types import FrameType
from typing import IO

from .spec import HOST, ROOT, VAR, ServiceSpec, SinkSpec, fill

REDIS_CONF = ROOT / "deploy" / "redis" / "redis.conf"
REDIS_DEFAULT_PORT = 6390  # not 6379: never collide with a Redis the machine already runs


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


class Stop:
    """Set by SIGINT/SIGTERM/SIGHUP; a second signal asks for an immediate kill."""

    # s; `uv run` forwards the signal it received, and a terminal's Ctrl-C reaches every
    # process in the group, so one keypress can arrive twice in quick succession.
    DUPLICATE_WINDOW = 1.0

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.force = False
        self._first_at = 0.0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            if time.monotonic() - self._first_at >= self.DUPLICATE_WINDOW:
                self.force = True
            return
        self._first_at = time.monotonic()
        say(f"{signal.Signals(signum).name} received, stopping (Ctrl-C again to kill now)")
        self.requested.set()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in tail)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do (uvicorn, redis): a port left in TIME_WAIT by the last run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(name: str, args: list[str], env: dict[str, str], log_path: Path | None) -> Child:
    log_file = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed in stop()
    process = subprocess.Popen(  # noqa: S603 - fixed argv built here, no shell
        args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        # Own process group: the terminal's Ctrl-C reaches only this launcher, which
        # then stops the services before Redis, in order.
        start_new_session=True,
    )
    return Child(name, process, log_path, log_file)


def stop(children: list[Child], timeout: float, stop_flag: Stop) -> None:
    """SIGTERM every live child, wait up to ``timeout`` s, then SIGKILL what is left."""
    live = [c for c in children if c.process.poll() is None]
    for child in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(c.process.poll() is None for c in live):
        if time.monotonic() >= deadline or stop_flag.force:
            for child in live:
                if child.process.poll() is None:
                    say(f"{child.name} did not stop in time, sending SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGKILL)
            for child in live:
                child.process.wait()
            break
        time.sleep(0.05)
    for child in live:
        say(f"{child.name} stopped ({child.describe_exit()})")
    for child in children:
        if child.log_file is not None:
            child.log_file.close()


def redis_answers(port: int, host: str = HOST) -> bool:
    """PING over the inline protocol; True on +PONG (or a NOAUTH error: it is up)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def start_redis(stop_flag: Stop) -> tuple[Child, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "[run] REDIS_URL is not set and there is no redis-server on PATH. Either set "
            "REDIS_URL=redis://host:port/0, or install Redis >= 7.0 (Debian/Ubuntu: "
            "'sudo apt-get install redis-server'; macOS: 'brew install redis')."
        )
    port = REDIS_DEFAULT_PORT if port_is_free(REDIS_DEFAULT_PORT) else free_port()
    data_dir = VAR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [binary, str(REDIS_CONF), "--port", str(port), "--dir", str(data_dir)]
    child = spawn("redis", args, dict(os.environ), data_dir / "redis.log")
    deadline = time.monotonic() + 15.0  # s; loading a large AOF can take a while
    while not redis_answers(port):
        if child.process.poll() is not None:
            raise SystemExit(
                f"[run] redis-server {child.describe_exit()}; last lines of "
                f"{child.log_path}:\n{child.log_tail()}"
            )
        if time.monotonic() >= deadline or stop_flag.requested.is_set():
            stop([child], 5.0, stop_flag)
            raise SystemExit(f"[run] redis-server did not answer PING on port {port} in time")
        time.sleep(0.05)
    return child, f"redis://{HOST}:{port}/0"


def external_redis_answers(url: str) -> bool | None:
    """Whether the Redis at REDIS_URL answers PING; None when this cannot tell (TLS, unix)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "redis" or not parsed.hostname:
        return None
    deadline = time.monotonic() + 5.0  # s
    while not redis_answers(parsed.port or 6379, parsed.hostname):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def greeted(port: int, greeting: bytes) -> bool:
    """Whether something accepts connections on ``port`` and greets with ``greeting``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            return sock.recv(64).startswith(greeting)
    except OSError:
        return False


def start_sink(sink: SinkSpec, stop_flag: Stop, log_path: Path | None) -> tuple[Child, int]:
    """``sink`` on its default port (or a free one), once it greets as it should."""
    port = sink.default_port if port_is_free(sink.default_port) else free_port()
    args = [sys.executable, "-m", sink.module, *(fill(a, port=port, var=VAR) for a in sink.args)]
    child = spawn(sink.name, args, dict(os.environ), log_path)
    deadline = time.monotonic() + 15.0  # s
    while not greeted(port, sink.greeting):
        if child.process.poll() is not None:
            raise SystemExit(f"[run] the {sink.title} {child.describe_exit()}\n{child.log_tail()}")
        if time.monotonic() >= deadline or stop_flag.requested.is_set():
            stop([child], 5.0, stop_flag)
            raise SystemExit(f"[run] the {sink.title} did not answer on port {port} in time")
        time.sleep(0.05)
    return child, port


def module_exists(module: str) -> bool:
    """Whether ``module`` can be found, without importing (running) any of its code."""
    top, *rest = module.split(".")
    try:
        spec = find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if not rest:
        return True
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    *packages, last = rest
    for package in packages:
        locations = [loc / package for loc in locations if (loc / package).is_dir()]
    return any(
        (loc / f"{last}.py").is_file() or (loc / last / "__init__.py").is_file()
        for loc in locations
    )


def find_script(spec: ServiceSpec) -> tuple[Path | None, str]:
    """The service's console script, or None with the reason it cannot run yet."""
    bin_dir = Path(sysconfig.get_path("scripts"))
    script = bin_dir / spec.script
    if not script.exists():
        return None, f"no console script {spec.script} in {bin_dir} (run 'make setup')"
    for entry in entry_points(group="console_scripts", name=spec.script):
        if not module_exists(entry.module):
            return None, f"entry point {entry.value} does not exist yet"
    return script, ""


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - http://127.0.0.1 only
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None
