"""Run Riverbed on this machine: a Redis (unless REDIS_URL names one) and every service.

Invoked by ``make run`` as ``uv run python deploy/local/run.py``; standard library only (and
the parts in ``local_stack/`` beside it).

- API key: ``RIVERBED_API_KEY`` when set, else a fresh random one, printed. The gateway's
  schedules admin key likewise: ``GATEWAY_ADMIN_API_KEY``, else a fresh one, printed. The
  webhooks and payments admin keys too: ``WEBHOOKS_API_KEY`` and ``PAYMENTS_API_KEY``, each
  given to its own service only (which never gets the ingestion key); an admin key equal
  to another key is refused.
- Redis: ``REDIS_URL`` when set; else ``redis-server deploy/redis/redis.conf`` on port
  6390 (or a free port when 6390 is taken), data and log under ``var/redis/``.
- Services: each ``services/<name>`` whose ``pyproject.toml`` has a ``[tool.riverbed.local]``
  table (see ``local_stack/spec.py``: port, keys, local env defaults, sinks, probes) and
  whose console script and entry module exist, on its port (8000..8003; ``<PREFIX>PORT``
  overrides), with ``REDIS_URL``, the keys above that are theirs and ``<PREFIX>PORT`` in
  their environment. Missing ones are named and skipped.
- Redis exporter: when ``prometheus-redis-exporter`` (Debian) or ``redis_exporter`` is on
  PATH, it watches that Redis on port 9121 (or a free port when 9121 is taken;
  ``REDIS_EXPORTER_PORT`` fixes one), its URL printed, its log in
  ``var/log/redis-exporter.log``; else one line says how to get it. ``--check`` also asks
  it whether it reaches Redis (``redis_up 1``).
- Sinks: what a service declares it talks to locally, started before it, e.g. the email
  service's SMTP sink (unless ``EMAIL_SMTP_HOST`` names a relay), on port 1025 (or a free
  one), which writes every message sent as an ``.eml`` file under ``var/mail/``.
- Ctrl-C or SIGTERM stops the services (SIGTERM, SIGKILL after ``--stop-timeout``),
  then the sinks and the exporter, then Redis. A second Ctrl-C kills at once. If any
  child exits on its own, the rest are stopped and the exit code is 1.

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
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# The launcher's parts sit beside it: importable when run as a script and when tests load
# this file by its path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_stack.exporter import exporter_sees_redis, start_exporter
from local_stack.keys import Keys, choose_key, choose_keys, shared_own_key
from local_stack.keys import keyed_environment as environment_with_keys
from local_stack.processes import (
    REDIS_CONF,
    Child,
    Stop,
    external_redis_answers,
    find_script,
    free_port,
    http_status,
    module_exists,
    port_is_free,
    redis_answers,
    say,
    spawn,
    start_redis,
    start_sink,
    stop,
)
from local_stack.spec import HOST, ROOT, VAR, ServiceSpec, fill, load_services
from local_stack.stack import Running, Stack, check

from riverbed.connection import redacted_url

__all__ = [  # what the chaos suite and the tests use, beside main
    "ADMIN_KEYS",
    "SERVICES",
    "Child",
    "Stop",
    "choose_key",
    "find_script",
    "free_port",
    "http_status",
    "keyed_environment",
    "main",
    "redis_answers",
    "spawn",
    "stop",
]

SERVICES = load_services()
#: service -> the key of its own (an admin API's), for the services that have one
ADMIN_KEYS = {spec.name: key for spec in SERVICES for key in spec.own_keys}
#: every key variable the launcher hands out; a service gets back only those that are its own
KEY_VARIABLES = tuple(dict.fromkeys(key for spec in SERVICES for key in spec.keys))
INGESTION_KEY = "RIVERBED_API_KEY"  # what anyone who may post events holds


def keyed_environment(
    base: dict[str, str], service: str, api_key: str, admin_keys: dict[str, str]
) -> dict[str, str]:
    """``base`` holding only the keys ``service`` may have, given the ingestion key and the
    admin keys by service (the chaos suite's and the tests' way to ask)."""
    keys = {INGESTION_KEY: api_key, **{ADMIN_KEYS[name]: k for name, k in admin_keys.items()}}
    spec = next(spec for spec in SERVICES if spec.name == service)
    return environment_with_keys(base, spec, keys, KEY_VARIABLES)


# -- resolve: Redis and the keys ------------------------------------------------------------


def resolve_keys() -> Keys | None:
    """Every key the services declare; None (said why) when one that must be its own is not."""
    keys = choose_keys(SERVICES)
    problem = shared_own_key(SERVICES, keys)
    if problem is not None:
        say(problem)
        return None
    return keys


def resolve_redis(stack: Stack, stop_flag: Stop) -> tuple[str, bool | None]:
    """REDIS_URL, else a Redis started here; and whether it answers (None: cannot tell)."""
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        say(f"Redis from REDIS_URL: {redacted_url(redis_url)}")
        # Read-only probe (PING): a Redis we did not start is never written to here.
        redis_ok = external_redis_answers(redis_url)
        if redis_ok is False:
            say("WARNING: that Redis does not answer PING; services will not be ready")
        return redis_url, redis_ok
    stack.redis, redis_url = start_redis(stop_flag)
    say(
        f"Redis {redis_url} started with {REDIS_CONF.relative_to(ROOT)} "
        f"(data and log in {(VAR / 'redis').relative_to(ROOT)}/)"
    )
    return redis_url, True


# -- plan: which services, on which ports ----------------------------------------------------


@dataclass
class Plan:
    launches: list[tuple[ServiceSpec, Path, int]]  # spec, console script, port; in order
    missing: list[str]  # services that cannot run yet, and why
    refused: list[str]  # ports that cannot be used: the launcher stops


def plan_services() -> Plan:
    plan = Plan([], [], [])
    for spec in SERVICES:
        script, reason = find_script(spec)
        if script is None:
            plan.missing.append(f"{spec.script}: {reason}")
            continue
        raw_port = os.environ.get(f"{spec.prefix}PORT", str(spec.default_port))
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            plan.refused.append(f"{spec.prefix}PORT={raw_port!r} is not a port (1-65535)")
            continue
        port = int(raw_port)
        if not port_is_free(port):
            plan.refused.append(f"{spec.name} port {port} is in use; set {spec.prefix}PORT")
            continue
        plan.launches.append((spec, script, port))
    return plan


# -- launch: sinks, then services --------------------------------------------------------------


def start_sink_of(
    spec: ServiceSpec, stack: Stack, log_dir: Path | None, stop_flag: Stop
) -> dict[str, str]:
    """Start ``spec``'s sink, if it has one and the environment names no real one; the
    variables that point the service at it."""
    sink = spec.sink
    if sink is None:
        return {}
    relay = os.environ.get(sink.unless)
    if relay:
        say(fill(sink.skipped, relay=relay))
        return {}
    if not module_exists(sink.module):
        return {}
    log_path = log_dir / f"{sink.name}.log" if log_dir else None
    child, port = start_sink(sink, stop_flag, log_path)
    stack.sinks.append(child)
    say(fill(sink.started, host=HOST, port=port))
    return {name: fill(value, host=HOST, port=port) for name, value in sink.env.items()}


def service_environment(
    spec: ServiceSpec, port: int, keys: Keys, redis_url: str, own_redis: bool
) -> dict[str, str]:
    """The launcher's environment as ``spec`` gets it: its keys only, Redis, its port, and
    the local defaults it declares where the environment sets none."""
    env = environment_with_keys(os.environ, spec, keys.values, KEY_VARIABLES)
    env.update(REDIS_URL=redis_url, PYTHONUNBUFFERED="1", **{f"{spec.prefix}PORT": str(port)})
    if own_redis:  # the Redis started here is one node, not a cluster
        env.pop("REDIS_CLUSTER", None)
    for name, value in spec.env.items():
        env.setdefault(name, fill(value, var=VAR))
    for name, relative in spec.paths.items():
        path = spec.folder / relative
        if name not in os.environ and path.exists():
            env[name] = str(path)
    return env


def launch(
    plan: Plan, keys: Keys, redis_url: str, stack: Stack, check: bool, stop_flag: Stop
) -> None:
    log_dir = VAR / "log"
    log_dir.mkdir(exist_ok=True)
    sink_env = {
        spec.name: start_sink_of(spec, stack, log_dir if check else None, stop_flag)
        for spec, _, _ in plan.launches
    }
    for spec, script, port in plan.launches:
        env = service_environment(spec, port, keys, redis_url, own_redis=stack.redis is not None)
        env.update(sink_env[spec.name])
        # In --check the services' logs go to files, keeping the report readable.
        log_path = log_dir / f"{spec.name}.log" if check else None
        if log_path is not None:
            log_path.unlink(missing_ok=True)  # the tail shown on failure is this run's
        child = spawn(spec.name, [str(script)], env, log_path)
        stack.services.append(Running(spec, child, port))


def print_endpoints(stack: Stack, keys: Keys) -> None:
    say("services:" if stack.services else "no service has an entry point yet; Redis only")
    for service in stack.services:
        paths = (service.spec.health, service.spec.ready, service.spec.metrics)
        say(f"  {service.spec.name:<9} {'  '.join(service.url(path) for path in paths)}")
    if stack.exporter is not None:
        say(f"redis exporter {stack.exporter_url} (log: var/log/redis-exporter.log)")
    for service in stack.services:
        for example in service.spec.examples:
            say(example.title)
            print(
                fill(example.command, host=HOST, port=service.port, key=keys.for_curl[example.key])
            )


# -- check or watch ---------------------------------------------------------------------------


def report_check(
    stack: Stack, args: argparse.Namespace, redis_ok: bool | None, missing: bool, stop_flag: Stop
) -> int:
    """Check every started service, say how each did; the exit status."""
    results = check(stack.services, args.timeout, stop_flag)
    logs: Mapping[str, Child] = {service.spec.name: service.child for service in stack.services}
    for name, result in results.items():
        say(f"check {name}: {result}")
        if result.startswith("FAILED") and logs[name].log_path:
            print(logs[name].log_tail(), flush=True)
    failed = redis_ok is False or any(r.startswith("FAILED") for r in results.values())
    if stack.exporter is not None:
        # started, it must be watching the Redis the services use
        watching = exporter_sees_redis(stack.exporter_url)
        say(f"check redis exporter: {'redis_up 1' if watching else 'FAILED: no redis_up 1'}")
        failed = failed or not watching
    if args.strict:
        failed = failed or missing
        failed = failed or any(r.startswith("alive") for r in results.values())
    say("check " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


def watch(stack: Stack, stop_flag: Stop) -> int:
    """Until a signal (0), or until any child exits on its own (1)."""
    say("running; Ctrl-C to stop")
    watched = stack.children()
    while not stop_flag.requested.wait(0.2):
        for child in watched:
            if child.process.poll() is not None:
                say(f"{child.name} {child.describe_exit()}; stopping the rest")
                tail = child.log_tail()
                if tail:
                    print(tail, flush=True)
                return 1
    return 0


# -- main -------------------------------------------------------------------------------------


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


def run_stack(args: argparse.Namespace, keys: Keys, stack: Stack, stop_flag: Stop) -> int:
    """Redis, the plan, the launch, then the check or the watch; the exit status."""
    redis_url, redis_ok = resolve_redis(stack, stop_flag)
    exporter = start_exporter(redis_url, stop_flag)
    if exporter is not None:
        stack.exporter, stack.exporter_url = exporter
    plan = plan_services()
    for line in plan.missing:
        say(f"not started, missing: {line}")
    if plan.refused:
        for line in plan.refused:
            say(line)
        return 1
    launch(plan, keys, redis_url, stack, args.check, stop_flag)
    print_endpoints(stack, keys)
    if args.check:
        return report_check(stack, args, redis_ok, bool(plan.missing), stop_flag)
    return watch(stack, stop_flag)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_flag = Stop()
    stop_flag.install()
    with exclusive_var():
        keys = resolve_keys()
        if keys is None:
            return 1
        stack = Stack()
        try:
            return run_stack(args, keys, stack, stop_flag)
        finally:
            stack.stop(args.stop_timeout, stop_flag)


if __name__ == "__main__":
    sys.exit(main())
