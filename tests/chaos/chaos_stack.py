"""The chaos suite's processes: a throwaway Redis and the four services, as ``make run``
starts them, each of which can be killed and started again.

Process handling is ``deploy/local/run.py``'s (loaded as a library: ``spawn`` puts each
child in its own session with its log file, ``stop`` sends SIGTERM then SIGKILL,
``find_script`` locates the console scripts). Redis is ``redis-server
deploy/redis/redis.conf`` — the shipped configuration, AOF with ``appendfsync everysec``
— on a free loopback port with its data in the run's directory, so that a restart finds
its data again. Every child gets the environment ``make run`` gives it, plus the
settings of :data:`CHAOS_SETTINGS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "deploy" / "local" / "run.py"
REDIS_CONF = ROOT / "deploy" / "redis" / "redis.conf"
EMAIL_TEMPLATES = ROOT / "services" / "email" / "templates"
HOST = "127.0.0.1"
SERVICE_NAMES = ("gateway", "email", "webhooks", "payments")

#: s; the webhooks service's whole-request timeout (its default, stated so the receiver
#: can tell a late 2xx)
WEBHOOKS_REQUEST_TIMEOUT_S = 15.0

#: s; how long a request the email service was sending when it died stays held against
#: other senders (its sending lease). The default, 300 s, would keep a request killed
#: mid-send waiting longer than a short run lasts; 130 s is the least the setting's own
#: guidance allows (above the runtime's 120 s handler timeout).
EMAIL_SEND_LEASE_S = 130.0

#: Settings that differ from the defaults, and why. Everything else is as shipped.
CHAOS_SETTINGS: dict[str, dict[str, str]] = {
    "all": {
        # Stable consumer names, as a StatefulSet pod's: a restarted service re-reads its
        # own pending entries (README, Configuration: <PREFIX>CONSUMER_NAME).
        # Retention would trim acknowledged entries of the streams whose events the
        # suite counts (payment.recorded is consumed by webhooks) before it reads them;
        # a run is shorter than an hour (s).
        "RETENTION_INTERVAL_S": "3600",
        "LOG_FORMAT": "json",
    },
    "email": {
        # The SMTP schedule (1 min, 5 min, 15 min…) compressed so that mail deferred by
        # the 20 s relay outage is sent again within the run; ms per retry.
        "EMAIL_RETRY_SCHEDULE_MS": "[5000, 10000, 20000, 30000]",
        "EMAIL_SEND_LEASE_S": str(int(EMAIL_SEND_LEASE_S)),
        "EMAIL_SMTP_SECURITY": "none",
    },
    "webhooks": {
        # Standard Webhooks' schedule (at once, 5 s, 5 min, 30 min…) compressed likewise,
        # for the receiver's 30 s of 500s; ms before attempts 2, 3, …
        "WEBHOOKS_RETRY_SCHEDULE_MS": "[0, 5000, 10000, 20000, 30000, 60000, 60000, 60000]",
        "WEBHOOKS_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "WEBHOOKS_REQUEST_TIMEOUT_S": str(WEBHOOKS_REQUEST_TIMEOUT_S),
    },
}


def load_launcher() -> Any:
    """``deploy/local/run.py`` as a module (it runs nothing on import)."""
    name = "riverbed_local_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCHER)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {LAUNCHER}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Stack:
    """Redis and the services of one chaos run; ``run_dir`` holds their data and logs."""

    def __init__(self, run_dir: Path, smtp_port: int) -> None:
        self.launcher = load_launcher()
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.smtp_port = smtp_port
        self.api_key = secrets.token_urlsafe(24)  # the gateway's ingestion key
        # the webhooks and payments admin APIs take keys of their own, never the ingestion key
        self.admin_keys = {name: secrets.token_urlsafe(24) for name in self.launcher.ADMIN_KEYS}
        self.redis_port: int = self.launcher.free_port()
        self.ports: dict[str, int] = {name: self.launcher.free_port() for name in SERVICE_NAMES}
        self.children: dict[str, Any] = {}  # name -> the launcher's Child
        self.stopped_on_purpose: set[str] = set()
        self.stop_flag = self.launcher.Stop()  # never installed: the runner owns the signals

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def admin_headers(self, name: str) -> dict[str, str]:
        """The Authorization header of ``name``'s admin API."""
        return {"Authorization": f"Bearer {self.admin_keys[name]}"}

    def base_url(self, name: str) -> str:
        return f"http://{HOST}:{self.ports[name]}"

    # -- Redis ---------------------------------------------------------------------------

    def start_redis(self, timeout_s: float = 30.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(
                "the chaos suite starts its own Redis: install redis-server >= 7.0 "
                "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
            )
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(exist_ok=True)
        args = [binary, str(REDIS_CONF), "--port", str(self.redis_port), "--dir", str(data_dir)]
        self._replace(
            "redis",
            self.launcher.spawn("redis", args, dict(os.environ), self.log_dir / "redis.log"),
        )
        deadline = time.monotonic() + timeout_s  # loading the AOF takes a moment
        while not self.launcher.redis_answers(self.redis_port):
            child = self.children["redis"]
            if child.process.poll() is not None:
                raise RuntimeError(f"redis-server {child.describe_exit()}:\n{child.log_tail()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server did not answer PING in {timeout_s:g} s")
            time.sleep(0.05)

    # -- services -------------------------------------------------------------------------

    def service_env(self, name: str) -> dict[str, str]:
        prefix = f"{name.upper()}_"
        base = {k: v for k, v in os.environ.items() if k not in {"REDIS_CLUSTER", "HOSTNAME"}}
        # as make run: each service gets only the keys that are its own
        env: dict[str, str] = self.launcher.keyed_environment(
            base, name, self.api_key, self.admin_keys
        )
        env.update(
            REDIS_URL=self.redis_url,
            PYTHONUNBUFFERED="1",
            **{f"{prefix}PORT": str(self.ports[name])},
            **{f"{prefix}CONSUMER_NAME": f"chaos-{name}"},
            **{f"{prefix}{k}": v for k, v in CHAOS_SETTINGS["all"].items()},
        )
        env.update(CHAOS_SETTINGS.get(name, {}))
        if name == "email":
            env.update(
                EMAIL_SMTP_HOST=HOST,
                EMAIL_SMTP_PORT=str(self.smtp_port),
                EMAIL_TEMPLATES_DIR=str(EMAIL_TEMPLATES),
            )
        if name in {"webhooks", "payments"}:
            database = self.run_dir / f"{name}.db"
            env[f"{prefix}DATABASE_URL"] = f"sqlite+aiosqlite:///{database}"
        return env

    def start_service(self, name: str) -> None:
        spec = next(s for s in self.launcher.SERVICES if s.name == name)
        script, reason = self.launcher.find_script(spec)
        if script is None:
            raise RuntimeError(f"cannot start {name}: {reason}")
        self._replace(
            name,
            self.launcher.spawn(
                name, [str(script)], self.service_env(name), self.log_dir / f"{name}.log"
            ),
        )

    def _replace(self, name: str, child: Any) -> None:
        """``child`` is now ``name``; the previous process's log file handle is closed (the
        new one appends to the same file)."""
        previous = self.children.get(name)
        if previous is not None and previous.log_file is not None:
            previous.log_file.close()
        self.children[name] = child
        self.stopped_on_purpose.discard(name)

    async def wait_ready(self, names: tuple[str, ...], timeout_s: float = 60.0) -> None:
        """Until each service's /readyz answers 200; fails on a service that exited."""
        deadline = time.monotonic() + timeout_s
        waiting = set(names)
        while waiting:
            for name in sorted(waiting):
                child = self.children[name]
                if child.process.poll() is not None:
                    raise RuntimeError(f"{name} {child.describe_exit()}:\n{child.log_tail()}")
                status = await asyncio.to_thread(
                    self.launcher.http_status, f"{self.base_url(name)}/readyz"
                )
                if status == 200:
                    waiting.discard(name)
            if waiting and time.monotonic() >= deadline:
                raise RuntimeError(f"not ready within {timeout_s:g} s: {sorted(waiting)}")
            await asyncio.sleep(0.2)

    # -- faults ---------------------------------------------------------------------------

    def send(self, name: str, sig: signal.Signals) -> None:
        """``sig`` to the child's process group (the console script and anything it ran)."""
        self.stopped_on_purpose.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.children[name].process.pid, sig)

    async def wait_exit(self, name: str, timeout_s: float) -> None:
        """Until the child exited; SIGKILL after ``timeout_s``."""
        process = self.children[name].process
        deadline = time.monotonic() + timeout_s
        while process.poll() is None:
            if time.monotonic() >= deadline:
                self.send(name, signal.SIGKILL)
                await asyncio.to_thread(process.wait, 10)
                return
            await asyncio.sleep(0.05)

    def unexpected_exits(self) -> list[str]:
        """Children that exited without the suite asking them to."""
        return [
            f"{name} {child.describe_exit()}"
            for name, child in self.children.items()
            if name not in self.stopped_on_purpose and child.process.poll() is not None
        ]

    # -- the end ----------------------------------------------------------------------------

    def stop_all(self, timeout_s: float = 35.0) -> None:
        """Services first (SIGTERM, SIGKILL after ``timeout_s``), Redis last."""
        self.stopped_on_purpose.update(self.children)
        services = [c for n, c in self.children.items() if n != "redis"]
        self.launcher.stop(services, timeout_s, self.stop_flag)
        if "redis" in self.children:
            self.launcher.stop([self.children["redis"]], 10.0, self.stop_flag)

    def kill_all(self) -> None:
        """Last resort (a second Ctrl-C, a failure while stopping): SIGKILL every child."""
        self.stopped_on_purpose.update(self.children)
        for child in self.children.values():
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    child.process.wait(10)


def settings_summary() -> str:
    """The settings that differ from the defaults, for the report."""
    lines = []
    for scope, values in CHAOS_SETTINGS.items():
        for key, value in values.items():
            name = f"<PREFIX>{key}" if scope == "all" else key
            lines.append(f"{name}={json.dumps(value) if ' ' in value else value}")
    return ", ".join(lines)
