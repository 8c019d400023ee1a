"""Run Riverbed on this machine: a Redis (unless REDIS_URL names one) and every service.

Invoked by ``make run`` as ``uv run python deploy/local/run.py``; standard library only.

- API key: ``RIVERBED_API_KEY`` when set, else a fresh random one, printed. The gateway's
  schedules admin key likewise: ``GATEWAY_ADMIN_API_KEY``, else a fresh one, printed. The
  webhooks and payments admin keys too: ``WEBHOOKS_API_KEY`` and ``PAYMENTS_API_KEY``, each
  given to its own service only (which never gets the ingestion key); an admin key equal
  to another key is refused.
- Redis: ``REDIS_URL`` when set; else ``redis-server deploy/redis/redis.conf`` on port
  6390 (or a free port when 6390 is taken), data and log under ``var/redis/``.
- Services: each of riverbed-gateway, -email, -webhooks, -payments whose console
  script and entry module exist, on ports 8000..8003 (``<PREFIX>PORT`` overrides),
  with ``REDIS_URL``, the keys above that are theirs and ``<PREFIX>PORT`` in their
  environment.
  Missing ones are named and skipped.
- Mail: unless ``EMAIL_SMTP_HOST`` names a relay, a local SMTP sink
  (``python -m riverbed_email.sink``) on port 1025 (or a free one) writes every message
  the email service sends as an ``.eml`` file under ``var/mail/``; the email service is
  pointed at it (``EMAIL_SMTP_HOST/PORT``, no TLS) and at the example templates.
- Ctrl-C or SIGTERM stops the services (SIGTERM, SIGKILL after ``--stop-timeout``),
  then Redis. A second Ctrl-C kills at once. If any child exits on its own, the rest
  are stopped and the exit code is 1.

``--check`` starts everything, waits until each service's ``/readyz`` answers 200 (or,
failing that within ``--timeout``, its ``/healthz``), reports which, stops everything
and exits 0 when every started service answered, else 1. ``--strict`` also fails on a
missing service or one that is alive but not ready.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import secrets
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from types import FrameType
from typing import IO

from riverbed.connection import redacted_url

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
REDIS_CONF = ROOT / "deploy" / "redis" / "redis.conf"
REDIS_DEFAULT_PORT = 6390  # not 6379: never collide with a Redis the machine already runs
SINK_DEFAULT_PORT = 1025  # the usual unprivileged port of a development SMTP sink
SINK_MODULE = "riverbed_email.sink"
EMAIL_TEMPLATES = ROOT / "services" / "email" / "templates"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServiceSpec:
    script: str
    prefix: str
    default_port: int

    @property
    def name(self) -> str:
        return self.script.removeprefix("riverbed-")


SERVICES = (
    ServiceSpec("riverbed-gateway", "GATEWAY_", 8000),
    ServiceSpec("riverbed-email", "EMAIL_", 8001),
    ServiceSpec("riverbed-webhooks", "WEBHOOKS_", 8002),
    ServiceSpec("riverbed-payments", "PAYMENTS_", 8003),
)

SCHEDULE_CURL = (
    "curl -X PUT http://{host}:{port}/v1/schedules/daily-digest "
    '-H "Authorization: Bearer {key}" '
    "-H 'Content-Type: application/json' "
    """-d '{{"cron":"0 8 * * *","tz":"Europe/Berlin","type":"email.requested.v1","""
    """"data":{{"to":"ops@example.com","template":"daily-digest","category":"bulk","""
    """"variables":{{"name":"Ops"}}}}}}'"""
)
CURL = (
    "curl -X POST http://{host}:{port}/v1/events "
    '-H "Authorization: Bearer {key}" '
    "-H 'Content-Type: application/json' "
    """-d '{{"type":"email.requested.v1","data":{{"to":"ada@example.com","""
    """"subject":"Hello","text":"Hi from Riverbed"}}}}'"""
)


#: the services whose own API is an admin API, and its key: never the ingestion key, which
#: anyone who may post events holds
ADMIN_KEYS = {"webhooks": "WEBHOOKS_API_KEY", "payments": "PAYMENTS_API_KEY"}
#: a read-only route of each admin API, for the printed curl
ADMIN_ROUTES = {"webhooks": "/v1/endpoints", "payments": "/v1/balances"}
#: every key variable the launcher hands out; a service gets back only those that are its own
KEY_VARIABLES = ("RIVERBED_API_KEY", "GATEWAY_ADMIN_API_KEY", *ADMIN_KEYS.values())


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


def keyed_environment(
    base: dict[str, str], service: str, api_key: str, admin_keys: dict[str, str]
) -> dict[str, str]:
    """``base`` holding only the keys ``service`` may have: an admin API its own key and no
    other (least of all the ingestion key), every other service the ingestion key."""
    env = {name: value for name, value in base.items() if name not in KEY_VARIABLES}
    if service in ADMIN_KEYS:
        env[ADMIN_KEYS[service]] = admin_keys[service]
    else:
        env["RIVERBED_API_KEY"] = api_key
    return env


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


def smtp_answers(port: int) -> bool:
    """Whether something accepts connections on ``port`` and greets with 220."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            return sock.recv(64).startswith(b"220")
    except OSError:
        return False


def start_mail_sink(stop_flag: Stop, log_path: Path | None) -> tuple[Child, int]:
    """The local SMTP sink, writing each message it receives under var/mail/."""
    port = SINK_DEFAULT_PORT if port_is_free(SINK_DEFAULT_PORT) else free_port()
    mail_dir = VAR / "mail"
    args = [sys.executable, "-m", SINK_MODULE, "--port", str(port), "--directory", str(mail_dir)]
    child = spawn("mail-sink", args, dict(os.environ), log_path)
    deadline = time.monotonic() + 15.0  # s
    while not smtp_answers(port):
        if child.process.poll() is not None:
            raise SystemExit(f"[run] the mail sink {child.describe_exit()}\n{child.log_tail()}")
        if time.monotonic() >= deadline or stop_flag.requested.is_set():
            stop([child], 5.0, stop_flag)
            raise SystemExit(f"[run] the mail sink did not answer on port {port} in time")
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


def check(
    services: dict[str, tuple[Child, int]], timeout: float, stop_flag: Stop
) -> dict[str, str]:
    """Poll each service until /readyz is 200; past ``timeout`` fall back to /healthz."""
    results: dict[str, str] = {}
    alive: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(results) < len(services):
        for name, (child, port) in services.items():
            if name in results:
                continue
            if child.process.poll() is not None:
                results[name] = f"FAILED: {child.describe_exit()}"
                continue
            base = f"http://{HOST}:{port}"
            if http_status(f"{base}/readyz") == 200:
                results[name] = "ready (/readyz 200)"
            elif name not in alive and http_status(f"{base}/healthz") == 200:
                alive.add(name)
        if time.monotonic() >= deadline or stop_flag.requested.is_set():
            for name in services:
                if name not in results:
                    results[name] = (
                        "alive, not ready (/healthz 200, /readyz not 200)"
                        if name in alive
                        else f"FAILED: neither /readyz nor /healthz answered 200 in {timeout:g} s"
                    )
            break
        time.sleep(0.25)
    return results


@contextlib.contextmanager
def exclusive_var() -> Iterator[None]:
    """One launcher per checkout: two Redis servers must not share var/redis."""
    VAR.mkdir(exist_ok=True)
    with open(VAR / "run.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"[run] another 'make run' is already using {VAR}; stop it first"
            ) from None
        yield


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="start, wait for readiness, stop, exit 0/1"
    )
    parser.add_argument(
        "--strict", action="store_true", help="with --check: fail on missing or not-ready services"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="with --check: seconds to wait for readiness"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=35.0,
        help="seconds a service gets to drain after SIGTERM before SIGKILL",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_flag = Stop()
    stop_flag.install()

    with exclusive_var():
        api_key = os.environ.get("RIVERBED_API_KEY", "")
        key_for_curl = "$RIVERBED_API_KEY"
        if not api_key:
            api_key = secrets.token_urlsafe(32)
            key_for_curl = api_key
            say(f"generated API key (set RIVERBED_API_KEY to choose one): {api_key}")
        else:
            say("API key from RIVERBED_API_KEY")
        # the gateway's schedules API takes a key of its own, never the ingestion key
        admin_key = os.environ.get("GATEWAY_ADMIN_API_KEY", "")
        admin_key_for_curl = "$GATEWAY_ADMIN_API_KEY"
        if not admin_key:
            admin_key = secrets.token_urlsafe(32)
            admin_key_for_curl = admin_key
            say(f"generated admin key (set GATEWAY_ADMIN_API_KEY to choose one): {admin_key}")
        else:
            say("admin key from GATEWAY_ADMIN_API_KEY")
        admin_keys: dict[str, str] = {}
        admin_keys_for_curl: dict[str, str] = {}
        for name, variable in ADMIN_KEYS.items():
            admin_keys[name], admin_keys_for_curl[name] = choose_key(variable, f"{name} admin key")
        for name, variable in ADMIN_KEYS.items():
            others = {"RIVERBED_API_KEY": api_key, "GATEWAY_ADMIN_API_KEY": admin_key}
            others.update({ADMIN_KEYS[n]: k for n, k in admin_keys.items() if n != name})
            same = sorted(other for other, key in others.items() if key == admin_keys[name])
            if same:
                say(f"{variable} must be a key of its own, not the same as {', '.join(same)}")
                return 1

        children: list[Child] = []
        redis: Child | None = None
        sink: Child | None = None
        try:
            redis_url = os.environ.get("REDIS_URL", "")
            redis_ok: bool | None = None
            if redis_url:
                say(f"Redis from REDIS_URL: {redacted_url(redis_url)}")
                # Read-only probe (PING): a Redis we did not start is never written to here.
                redis_ok = external_redis_answers(redis_url)
                if redis_ok is False:
                    say("WARNING: that Redis does not answer PING; services will not be ready")
            else:
                redis, redis_url = start_redis(stop_flag)
                redis_ok = True
                say(
                    f"Redis {redis_url} started with {REDIS_CONF.relative_to(ROOT)} "
                    f"(data and log in {(VAR / 'redis').relative_to(ROOT)}/)"
                )

            plan: list[tuple[ServiceSpec, Path, int]] = []
            missing: list[str] = []
            busy: list[str] = []
            for spec in SERVICES:
                script, reason = find_script(spec)
                if script is None:
                    missing.append(f"{spec.script}: {reason}")
                    continue
                raw_port = os.environ.get(f"{spec.prefix}PORT", str(spec.default_port))
                if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
                    busy.append(f"{spec.prefix}PORT={raw_port!r} is not a port (1-65535)")
                    continue
                port = int(raw_port)
                if not port_is_free(port):
                    busy.append(f"{spec.name} port {port} is in use; set {spec.prefix}PORT")
                    continue
                plan.append((spec, script, port))
            for line in missing:
                say(f"not started, missing: {line}")
            if busy:
                for line in busy:
                    say(line)
                return 1

            log_dir = VAR / "log"
            log_dir.mkdir(exist_ok=True)
            email_env: dict[str, str] = {}
            if any(spec.name == "email" for spec, _, _ in plan):
                if os.environ.get("EMAIL_SMTP_HOST"):
                    say(f"mail: relay from EMAIL_SMTP_HOST ({os.environ['EMAIL_SMTP_HOST']})")
                elif module_exists(SINK_MODULE):
                    sink_log = log_dir / "mail-sink.log" if args.check else None
                    sink, sink_port = start_mail_sink(stop_flag, sink_log)
                    email_env = {
                        "EMAIL_SMTP_HOST": HOST,
                        "EMAIL_SMTP_PORT": str(sink_port),
                        "EMAIL_SMTP_SECURITY": "none",
                    }
                    say(
                        f"mail sink smtp://{HOST}:{sink_port}: every message sent is written "
                        f"to {(VAR / 'mail').relative_to(ROOT)}/ as an .eml file"
                    )
                if "EMAIL_TEMPLATES_DIR" not in os.environ and EMAIL_TEMPLATES.is_dir():
                    email_env["EMAIL_TEMPLATES_DIR"] = str(EMAIL_TEMPLATES)
            services: dict[str, tuple[Child, int]] = {}
            for spec, script, port in plan:
                env = keyed_environment(dict(os.environ), spec.name, api_key, admin_keys)
                env.update(
                    REDIS_URL=redis_url,
                    PYTHONUNBUFFERED="1",
                    **{f"{spec.prefix}PORT": str(port)},
                )
                if redis is not None:  # the Redis started here is one node, not a cluster
                    env.pop("REDIS_CLUSTER", None)
                if spec.name == "email":
                    env.update(email_env)
                if spec.name == "gateway":
                    env["GATEWAY_ADMIN_API_KEY"] = admin_key
                if spec.name == "webhooks":
                    # local receivers live on loopback, which the SSRF guard refuses by default
                    env.setdefault("WEBHOOKS_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
                    env.setdefault(
                        "WEBHOOKS_DATABASE_URL", f"sqlite+aiosqlite:///{VAR / 'webhooks.db'}"
                    )
                if spec.name == "payments":
                    env.setdefault(
                        "PAYMENTS_DATABASE_URL", f"sqlite+aiosqlite:///{VAR / 'payments.db'}"
                    )
                # In --check the services' logs go to files, keeping the report readable.
                log_path = log_dir / f"{spec.name}.log" if args.check else None
                if log_path is not None:
                    log_path.unlink(missing_ok=True)  # the tail shown on failure is this run's
                child = spawn(spec.name, [str(script)], env, log_path)
                children.append(child)
                services[spec.name] = (child, port)

            say("services:" if services else "no service has an entry point yet; Redis only")
            for name, (_, port) in services.items():
                base = f"http://{HOST}:{port}"
                say(f"  {name:<9} {base}/healthz  {base}/readyz  {base}/metrics")
            if "gateway" in services:
                say("post an event:")
                print(CURL.format(host=HOST, port=services["gateway"][1], key=key_for_curl))
                say("schedule a daily digest (admin key):")
                print(
                    SCHEDULE_CURL.format(
                        host=HOST, port=services["gateway"][1], key=admin_key_for_curl
                    )
                )
            for name, route in ADMIN_ROUTES.items():
                if name in services:
                    say(f"{name} admin API ({ADMIN_KEYS[name]}; the API key is refused there):")
                    print(
                        f"curl http://{HOST}:{services[name][1]}{route} "
                        f'-H "Authorization: Bearer {admin_keys_for_curl[name]}"'
                    )

            if args.check:
                results = check(services, args.timeout, stop_flag)
                for name, result in results.items():
                    say(f"check {name}: {result}")
                    if result.startswith("FAILED") and services[name][0].log_path:
                        print(services[name][0].log_tail(), flush=True)
                failed = redis_ok is False or any(r.startswith("FAILED") for r in results.values())
                if args.strict:
                    failed = failed or bool(missing)
                    failed = failed or any(r.startswith("alive") for r in results.values())
                say("check " + ("FAILED" if failed else "passed"))
                return 1 if failed else 0

            say("running; Ctrl-C to stop")
            watched = [*children, *([sink] if sink else []), *([redis] if redis else [])]
            while not stop_flag.requested.wait(0.2):
                for child in watched:
                    if child.process.poll() is not None:
                        say(f"{child.name} {child.describe_exit()}; stopping the rest")
                        tail = child.log_tail()
                        if tail:
                            print(tail, flush=True)
                        return 1
            return 0
        finally:
            stop(children, args.stop_timeout, stop_flag)
            if sink is not None:
                # after the email service, so it can finish what it was sending
                stop([sink], 5.0, stop_flag)
            if redis is not None:
                # After the services, so they can acknowledge what they finished.
                stop([redis], 10.0, stop_flag)


if __name__ == "__main__":
    sys.exit(main())
