"""Gateway ingestion over real HTTP versus raw redis-py XADD, in the same run.

The gateway runs as its own process (``python -m riverbed_gateway``, configured only
through its environment, as an operator runs it, its JSON access log at INFO going to
a file); a load generator in another
process (aiohttp, keep-alive connections, a fixed number of requests in flight)
posts ``payment.succeeded.v1`` events to it. Every response must be ``202``; any
other answer or a failed request is counted and reported, and only accepted events
count towards the rate.

- ``gateway-single``: ``POST /v1/events``, one event a request, ``SINGLE_CONCURRENCY``
  requests in flight (``--events`` x 2/5 requests: 20,000 by default); baseline
  ``raw-xadd-concurrent``: as many asyncio tasks, each awaiting one ``XADD`` at a time.
- ``gateway-batched``: ``POST /v1/events:batch`` with ``BATCH`` events a request,
  ``BATCH_CONCURRENCY`` requests in flight (``--events`` x 2 events: 100,000 by
  default); baseline ``raw-xadd-pipeline-concurrent``: as many tasks, each awaiting a
  non-transactional pipeline of ``BATCH`` ``XADD``.

Each also prints p50 and p99 latency of one request (HTTP, measured by the load
generator) against one ``XADD`` or pipeline (measured by the baseline's tasks). The
baseline writes the same CloudEvent JSON the gateway writes, encoded before the clock
starts, from this process.

Those latencies are at equal concurrency (as many calls in flight on both sides), where
Little's law ties latency to throughput: mean latency = calls in flight / throughput, so a
side with a fifth of the other's throughput has five times its mean latency, whatever its
tail. They say how long a caller waits at saturation, not how slow the gateway is when it
is not saturated. ``gateway-single-fixed-rate-p50``/``-p99`` compare latency at the same
offered load instead: ``FIXED_RATE_SHARE`` (half) of the gateway's measured single-event
throughput, for ``FIXED_RATE_SECONDS`` a round, open loop on both sides (each request or
``XADD`` sent at its due time whatever the answers before it, in a task of its own; latency
counts from the due time, so a sender that falls behind counts its own lateness too);
baseline ``raw-xadd-fixed-rate``: one ``XADD`` a call from this process at the same rate.
The round with the lowest p99 of each side is printed.

Goals (issue #3, reported, never asserted): ≥ 4,000 single events/s with p99 ≤ 25 ms;
≥ 50,000 events/s in batches.

The gateway writes to the contract's stream, ``rb:{payment.succeeded}:stream``: on a
``REDIS_URL`` where that stream has consumer groups the benchmark is skipped (it would
feed them fake payments). What it wrote is removed after each round: the stream
itself when it did not exist before, else the entry ids the gateway answered with.

``gateway-single-tracing-off``: what OpenTelemetry tracing costs when it is off (no
``OTEL_EXPORTER_OTLP_ENDPOINT``, as here): the ``gateway-single`` load, alternately against
the gateway as shipped and against the same gateway with ``riverbed.tracing``'s hooks on
its request path bypassed (baseline ``gateway-single-tracing-bypassed``: no ASGI layer for
the request span, no stamping of events; this file run with ``BYPASSED_TRACING_FLAG``).

``--profile``: one more round of each kind with the gateway sampled by py-spy (or, when
py-spy cannot run, under cProfile); its hot spots go to stderr.

Run alone: ``uv run --frozen python bench/gateway.py [--events N] [--repeat R] [--profile]``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import io
import json
import os
import pstats
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis.asyncio
from _common import (
    Options,
    RawRedis,
    bench_line,
    bench_redis,
    delete_stream_family,
    emit,
    make_events,
    ms_line,
    note,
    parse_options,
    percentile,
    unique_stream,
)

from riverbed import eventloop, keys
from riverbed.testing import TEST_STREAM, free_port
from riverbed_contracts import CloudEvent
from riverbed_gateway.keys import rate_limit_key

if TYPE_CHECKING:
    import aiohttp

SINGLE_CONCURRENCY = 32  # requests (or baseline XADDs) in flight
BATCH_CONCURRENCY = 16  # batch requests (or baseline pipelines) in flight
BATCH = 100  # events per batch request / per baseline pipeline
WARM_UP_REQUESTS = 1_000  # singles, and a tenth as many batches
#: the fixed-rate comparison: offered rate, as a share of the gateway's measured single-event
#: throughput (well below both sides' capacity); how long each side is offered it
FIXED_RATE_SHARE = 0.5
FIXED_RATE_SECONDS = 8.0  # s
OPEN_LOOP_CONNECTIONS = 256  # the load generator's keep-alive connections at most, open loop
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
PROFILE_TOP = 25
GATEWAY_STREAM_KEY = keys.stream_key(TEST_STREAM)  # where payment.succeeded.v1 goes
#: the source the load generator's events claim: a client's own, since the gateway refuses
#: one in the urn:riverbed: namespace (a client may not pose as a service)
CLIENT_SOURCE = "urn:example:bench"

#: goals from issue #3, on the project's 2-core machine
GOAL_SINGLE_PER_S = 4_000
GOAL_SINGLE_P99_MS = 25.0
GOAL_BATCHED_PER_S = 50_000

LOAD_GENERATOR_FLAG = "--load-generator"
BYPASSED_TRACING_FLAG = "--gateway-with-tracing-bypassed"
THIS_FILE = Path(__file__).resolve()  # run again as the load generator


# -- figures --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One timed round of one side: what was accepted, how fast, how long each call took."""

    events: int  # accepted events
    seconds: float
    latencies_ms: Sequence[float]  # per request / per call, sorted
    statuses: dict[str, int] = field(default_factory=dict)  # HTTP status -> responses
    failures: int = 0  # requests with no HTTP answer (connection errors, timeouts)
    failure_samples: Sequence[str] = ()
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core, timed

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile, ``q`` in [0, 100]."""
        return percentile(self.latencies_ms, q)

    @property
    def refused(self) -> dict[str, int]:
        return {status: n for status, n in self.statuses.items() if status != "202"}


def _fastest(runs: list[Run]) -> Run:
    return max(runs, key=lambda run: run.per_second)


# -- the load generator (a separate process: this file run with LOAD_GENERATOR_FLAG) ----


@contextlib.asynccontextmanager
async def warm_session(
    base_url: str, headers: dict[str, str], *, limit: int, warm: int
) -> AsyncIterator[aiohttp.ClientSession]:
    """A keep-alive HTTP session (at most ``limit`` connections) with ``warm`` of them
    opened before the clock starts, so no timed request pays for a connect."""
    import aiohttp  # only the load generator needs it

    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=60)  # s
    async with aiohttp.ClientSession(
        base_url, connector=connector, timeout=timeout, headers=headers
    ) as session:

        async def open_connection() -> None:
            async with session.get("/healthz") as response:
                await response.read()

        await asyncio.gather(*(open_connection() for _ in range(warm)))
        yield session


async def _generate_load(plan: dict[str, Any]) -> dict[str, Any]:
    """Post every body of the plan over keep-alive connections: ``concurrency`` at a time
    (closed loop), or, when the plan has a ``rate``, each at its own time whatever the
    answers before it (open loop, latency from that time)."""
    import aiohttp  # only the load generator needs it

    bodies = [body.encode() for body in plan["bodies"]]
    concurrency = int(plan["concurrency"])
    rate = plan.get("rate")
    headers = {
        "Authorization": f"Bearer {plan['api_key']}",
        "Content-Type": "application/json",
    }
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    entry_ids: list[str] = []
    accepted = 0
    next_index = 0
    # open loop: as many connections as requests may overlap, a bounded number
    limit = OPEN_LOOP_CONNECTIONS if rate else concurrency
    async with warm_session(plan["base_url"], headers, limit=limit, warm=concurrency) as session:

        async def post(body: bytes, started: float) -> None:
            nonlocal accepted
            try:
                async with session.post(plan["path"], data=body) as response:
                    answer = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                failures.append(f"{type(error).__name__}: {error}")
                return
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            if status == 202:
                document = json.loads(answer)
                accepted_here = document.get("events", [document])
                accepted += len(accepted_here)
                entry_ids.extend(item["entry_id"] for item in accepted_here)

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                body = bodies[next_index]
                next_index += 1
                await post(body, time.perf_counter())

        async def load() -> None:
            if rate:
                await _at_fixed_rate(bodies, float(rate), post)
            else:
                await asyncio.gather(*(worker() for _ in range(concurrency)))

        watched = {name: int(pid) for name, pid in plan["watch_pids"].items()}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
        own_before = time.process_time()
        started = time.perf_counter()
        await load()
        seconds = time.perf_counter() - started
        cpu = {"load generator": (time.process_time() - own_before) / seconds}
        for name, pid in watched.items():
            before, after = cpu_before[name], _cpu_seconds(pid)
            if before is not None and after is not None:
                cpu[name] = (after - before) / seconds
    return {
        "events": accepted,
        "seconds": seconds,
        "latencies_ms": sorted(latency * 1000 for latency in latencies),
        "statuses": {str(status): n for status, n in statuses.items()},
        "failures": len(failures),
        "failure_samples": failures[:5],
        "entry_ids": entry_ids,
        "cpu": cpu,
    }


async def _at_fixed_rate(
    items: Sequence[Any], rate: float, call: Callable[[Any, float], Awaitable[None]]
) -> None:
    """``call(item, due)`` for each item at its due time, ``rate`` a second, each in a task of
    its own so that no answer delays the next call (open loop). ``due`` is a
    ``time.perf_counter()`` time: latency counts from it, so a caller that falls behind
    (a busy process) counts its own lateness too instead of hiding it."""
    start = time.perf_counter() + 0.01  # s
    interval = 1.0 / rate  # s
    # only the calls still running are kept: thousands of finished tasks held to the end
    # would be walked by every full garbage collection, a pause growing through the round
    running: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    for index, item in enumerate(items):
        due = start + index * interval
        ahead = due - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        task = asyncio.create_task(call(item, due))
        running.add(task)
        task.add_done_callback(finished)
    while running:
        await asyncio.wait(set(running))
    if failures:
        raise failures[0]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a local process (Linux /proc), None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (clock ticks)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_generator_main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    result = eventloop.run(_generate_load(plan))
    json.dump(result, sys.stdout)
    return 0


# -- the gateway process ----------------------------------------------------------


@dataclass
class Gateway:
    """A gateway process this benchmark started, with its own API key."""

    process: asyncio.subprocess.Process
    base_url: str
    api_key: str
    key_name: str
    log_path: Path
    profile_path: Path | None = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _gateway_environment(redis_url: str, port: int, key_name: str, api_key: str) -> dict[str, str]:
    # start from this environment without any gateway setting or key of the caller's own
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GATEWAY_", "REDIS_")) and name != "RIVERBED_API_KEY"
    }
    env.update(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_PORT": str(port),
            # access logs on, as in production: one JSON line a request, to the log file
            "GATEWAY_LOG_LEVEL": "INFO",
            "GATEWAY_LOG_FORMAT": "json",
            # a key of its own: its rate-limit state is a key no one else uses
            "GATEWAY_API_KEYS": json.dumps(
                [{"name": key_name, "key": api_key, "scopes": ["payment.*"]}]
            ),
            # far above what a run sends: neither the limiter nor backpressure may refuse
            "GATEWAY_RATE_LIMIT_PER_S": "100000000",
            "GATEWAY_RATE_LIMIT_BURST": "100000000",
            "GATEWAY_MAX_STREAM_LENGTH": "1000000000",
            "GATEWAY_MAX_GROUP_LAG": "1000000000",
        }
    )
    return env


@contextlib.asynccontextmanager
async def running_gateway(
    redis_url: str, workdir: Path, *, cprofile: bool = False, tracing_bypassed: bool = False
) -> AsyncIterator[Gateway]:
    """Start ``python -m riverbed_gateway`` (or, ``tracing_bypassed``, the same gateway with
    its tracing hooks replaced by nothing), wait for /readyz, SIGTERM it at the end."""
    port = free_port()
    key_name = f"bench-{secrets.token_hex(5)}"
    api_key = "rbk_" + secrets.token_urlsafe(32)
    log_path = workdir / f"gateway-{port}.log"
    profile_path = workdir / f"gateway-{port}.prof" if cprofile else None
    command = [sys.executable]
    if profile_path is not None:
        command += ["-m", "cProfile", "-o", str(profile_path)]
    command += (
        [str(THIS_FILE), BYPASSED_TRACING_FLAG] if tracing_bypassed else ["-m", "riverbed_gateway"]
    )
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            *command,
            env=_gateway_environment(redis_url, port, key_name, api_key),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    gateway = Gateway(
        process, f"http://127.0.0.1:{port}", api_key, key_name, log_path, profile_path
    )
    try:
        await _wait_ready(gateway)
        yield gateway
    finally:
        await _stop(gateway)


async def _wait_ready(gateway: Gateway) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=2.0) as client:
        while True:
            if gateway.process.returncode is not None:
                raise RuntimeError(
                    f"the gateway exited with {gateway.process.returncode} before it was "
                    f"ready:\n{gateway.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the gateway was not ready within {READY_TIMEOUT_S:g} s:\n{gateway.log_tail()}"
                )
            await asyncio.sleep(0.05)


async def _stop(gateway: Gateway) -> None:
    process = gateway.process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            note(f"the gateway did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM: killed")
            process.kill()
            await process.wait()
    if process.returncode != 0:
        note(f"the gateway exited with {process.returncode}; its log:\n{gateway.log_tail()}")


# -- the two sides ------------------------------------------------------------------


def _single_bodies(events: list[CloudEvent]) -> list[str]:
    return [
        json.dumps({"type": e.type, "data": e.data, "source": CLIENT_SOURCE}, separators=(",", ":"))
        for e in events
    ]


def _batch_bodies(events: list[CloudEvent]) -> list[str]:
    posted = [{"type": e.type, "data": e.data, "source": CLIENT_SOURCE} for e in events]
    return [
        json.dumps({"events": posted[i : i + BATCH]}, separators=(",", ":"))
        for i in range(0, len(posted), BATCH)
    ]


class GatewaySide:
    """Rounds of HTTP load against one running gateway, each cleaned up after itself."""

    def __init__(self, gateway: Gateway, monitor: RawRedis, workdir: Path) -> None:
        self.gateway = gateway
        self.monitor = monitor
        self.workdir = workdir
        self.stream_existed = False
        self.watch_pids = {"gateway": gateway.process.pid}

    async def prepare(self) -> None:
        self.stream_existed = bool(await self.monitor.exists(GATEWAY_STREAM_KEY))
        redis_pid = await _local_redis_pid(self.monitor)
        if redis_pid is not None:
            self.watch_pids["redis"] = redis_pid

    async def round(
        self, bodies: list[str], path: str, concurrency: int, rate: float | None = None
    ) -> Run:
        """Post ``bodies``: ``concurrency`` in flight, or (``rate``) open loop at that rate."""
        plan = {
            "base_url": self.gateway.base_url,
            "api_key": self.gateway.api_key,
            "path": path,
            "concurrency": concurrency,
            "rate": rate,
            "watch_pids": self.watch_pids,
            "bodies": bodies,
        }
        plan_path = self.workdir / "plan.json"
        plan_path.write_text(json.dumps(plan))
        generator = await asyncio.create_subprocess_exec(
            sys.executable,
            str(THIS_FILE),
            LOAD_GENERATOR_FLAG,
            str(plan_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await generator.communicate()
        if generator.returncode != 0:
            raise RuntimeError(
                f"the load generator failed ({generator.returncode}):\n"
                f"{err.decode(errors='replace')[-3000:]}"
            )
        result = json.loads(out)
        await self._clean(result["entry_ids"])
        return Run(
            events=result["events"],
            seconds=result["seconds"],
            latencies_ms=result["latencies_ms"],
            statuses=result["statuses"],
            failures=result["failures"],
            failure_samples=result["failure_samples"],
            cpu=result["cpu"],
        )

    async def _clean(self, entry_ids: list[str]) -> None:
        if not self.stream_existed:
            await self.monitor.unlink(GATEWAY_STREAM_KEY)
            return
        for start in range(0, len(entry_ids), 1_000):
            await self.monitor.xdel(GATEWAY_STREAM_KEY, *entry_ids[start : start + 1_000])

    async def finish(self) -> None:
        await self.monitor.unlink(rate_limit_key(self.gateway.key_name))


async def _local_redis_pid(client: RawRedis) -> int | None:
    """The pid of the Redis server when it is a process on this machine, else None."""
    pid = int((await client.info("server")).get("process_id", 0))
    return pid if pid and _command_of(pid).startswith("redis") else None


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def _raw_round(
    client: RawRedis,
    monitor: RawRedis,
    batches: list[list[dict[str, str]]],
    concurrency: int,
) -> Run:
    """``concurrency`` tasks, each taking the next batch: one XADD, or a pipeline of them."""
    stream = unique_stream("gateway.raw")
    key = keys.stream_key(stream)
    latencies: list[float] = []
    pending = iter(batches)

    async def one(batch: list[dict[str, str]]) -> None:
        if len(batch) == 1:
            await client.xadd(key, batch[0])  # type: ignore[arg-type]
            return
        async with client.pipeline(transaction=False) as pipe:
            for entry in batch:
                pipe.xadd(key, entry)  # type: ignore[arg-type]
            await pipe.execute()

    async def worker() -> None:
        for batch in pending:
            started = time.perf_counter()
            await one(batch)
            latencies.append(time.perf_counter() - started)

    gc.collect()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await delete_stream_family(monitor, stream)
    return Run(
        events=sum(len(batch) for batch in batches),
        seconds=seconds,
        latencies_ms=sorted(latency * 1000 for latency in latencies),
    )


async def _raw_round_at_rate(
    client: RawRedis, monitor: RawRedis, entries: list[dict[str, str]], rate: float
) -> Run:
    """One ``XADD`` a call, ``rate`` calls a second, open loop (``_at_fixed_rate``); ``client``
    has a blocking pool of ``OPEN_LOOP_CONNECTIONS``, as the load generator has connections:
    a call waiting for one counts that wait."""
    stream = unique_stream("gateway.raw-rate")
    key = keys.stream_key(stream)
    latencies: list[float] = []

    async def one(entry: dict[str, str], due: float) -> None:
        await client.xadd(key, entry)  # type: ignore[arg-type]
        latencies.append(time.perf_counter() - due)

    gc.collect()
    try:
        started = time.perf_counter()
        await _at_fixed_rate(entries, rate, one)
        seconds = time.perf_counter() - started
    finally:
        await delete_stream_family(monitor, stream)
    return Run(
        events=len(entries),
        seconds=seconds,
        latencies_ms=sorted(latency * 1000 for latency in latencies),
    )


async def _fixed_rate(
    comparison: Comparison,
    side: GatewaySide,
    raw_url: str,
    monitor: RawRedis,
    measured: Run,
    repeat: int,
) -> list[str]:
    """Latency at the same offered load on both sides: ``FIXED_RATE_SHARE`` of the gateway's
    measured single-event throughput, open loop, for ``FIXED_RATE_SECONDS`` each round;
    rounds alternate; the round with the lowest p99 of each side is printed."""
    rate = max(100.0, round(measured.per_second * FIXED_RATE_SHARE, -2))  # events/s
    count = min(len(comparison.bodies), int(rate * FIXED_RATE_SECONDS))
    bodies = comparison.bodies[:count]
    entries = [batch[0] for batch in comparison.raw_batches[:count]]
    note(
        f"gateway-single-fixed-rate: {count} single events at {rate:,.0f}/s "
        f"({FIXED_RATE_SHARE:.0%} of the gateway's {measured.per_second:,.0f}/s), open loop, "
        "on each side; latency from each request's due time"
    )
    http_runs: list[Run] = []
    raw_runs: list[Run] = []
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        raw_url, max_connections=OPEN_LOOP_CONNECTIONS, timeout=None
    )
    raw_client = RawRedis(connection_pool=pool)
    try:
        for round_ in range(repeat):
            if round_ % 2:
                raw_runs.append(await _raw_round_at_rate(raw_client, monitor, entries, rate))
            http_runs.append(
                await side.round(bodies, comparison.path, comparison.concurrency, rate)
            )
            if not round_ % 2:
                raw_runs.append(await _raw_round_at_rate(raw_client, monitor, entries, rate))
    finally:
        await raw_client.aclose()
        await pool.aclose()
    _report_refusals("gateway-single-fixed-rate", http_runs)
    http = min(http_runs, key=lambda run: run.percentile_ms(99))
    raw = min(raw_runs, key=lambda run: run.percentile_ms(99))
    note(
        f"gateway-single-fixed-rate: achieved {http.per_second:,.0f}/s through the gateway, "
        f"{raw.per_second:,.0f}/s raw"
    )
    name, baseline = "gateway-single-fixed-rate", "raw-xadd-fixed-rate"
    lines = []
    for q in (50, 99):
        http_ms, raw_ms = http.percentile_ms(q), raw.percentile_ms(q)
        lines.append(emit(ms_line(f"{name}-p{q}", http_ms, f"{baseline}-p{q}", raw_ms)))
    return lines


@dataclass(frozen=True)
class Comparison:
    name: str
    baseline_name: str
    path: str
    concurrency: int
    bodies: list[str]  # what the load generator posts
    raw_batches: list[list[dict[str, str]]]  # what the baseline XADDs, per call
    warm_up: int  # requests


async def _compare(
    comparison: Comparison,
    gateway: GatewaySide,
    raw_client: RawRedis,
    monitor: RawRedis,
    repeat: int,
) -> tuple[Run, Run]:
    async def http(bodies: list[str]) -> Run:
        return await gateway.round(bodies, comparison.path, comparison.concurrency)

    async def raw(batches: list[list[dict[str, str]]]) -> Run:
        return await _raw_round(raw_client, monitor, batches, comparison.concurrency)

    await http(comparison.bodies[: comparison.warm_up])
    await raw(comparison.raw_batches[: comparison.warm_up])
    http_runs: list[Run] = []
    raw_runs: list[Run] = []
    for round_ in range(repeat):
        # alternate which side goes first, so drift on a noisy machine hits both
        async def http_side() -> None:
            http_runs.append(await http(comparison.bodies))

        async def raw_side() -> None:
            raw_runs.append(await raw(comparison.raw_batches))

        sides: list[Callable[[], Awaitable[None]]] = (
            [http_side, raw_side] if round_ % 2 else [raw_side, http_side]
        )
        for side in sides:
            await side()
    _report_refusals(comparison.name, http_runs)
    fastest = _fastest(http_runs)
    if fastest.cpu:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in fastest.cpu.items())
        note(f"{comparison.name}: CPU during the fastest round, share of one core: {shares}")
    return fastest, _fastest(raw_runs)


def _report_refusals(name: str, runs: list[Run]) -> None:
    requests = sum(sum(run.statuses.values()) + run.failures for run in runs)
    refused: collections.Counter[str] = collections.Counter()
    for run in runs:
        refused.update(run.refused)
    failures = sum(run.failures for run in runs)
    if not refused and not failures:
        note(f"{name}: all {requests} timed requests answered 202")
        return
    samples = [sample for run in runs for sample in run.failure_samples][:3]
    note(
        f"{name}: ERRORS in {requests} timed requests: non-202 answers {dict(refused)}, "
        f"{failures} without an answer {samples}"
    )


def _comparisons(options: Options) -> list[Comparison]:
    single = make_events(max(options.events * 2 // 5, 100))
    batched = make_events(options.events * 2)
    entries_single = [[event.to_entry()] for event in single]  # encoded before any clock
    entries_batched = [event.to_entry() for event in batched]
    return [
        Comparison(
            name="gateway-single",
            baseline_name="raw-xadd-concurrent",
            path="/v1/events",
            concurrency=SINGLE_CONCURRENCY,
            bodies=_single_bodies(single),
            raw_batches=entries_single,
            warm_up=WARM_UP_REQUESTS,
        ),
        Comparison(
            name="gateway-batched",
            baseline_name="raw-xadd-pipeline-concurrent",
            path="/v1/events:batch",
            concurrency=BATCH_CONCURRENCY,
            bodies=_batch_bodies(batched),
            raw_batches=[
                entries_batched[i : i + BATCH] for i in range(0, len(entries_batched), BATCH)
            ],
            warm_up=WARM_UP_REQUESTS // 10,
        ),
    ]


def _goals(single: Run, batched: Run) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    single_p99 = single.percentile_ms(99)
    note(
        f"goals (issue #3): single {single.per_second:,.0f} events/s vs ≥ {GOAL_SINGLE_PER_S:,} "
        f"({verdict(single.per_second >= GOAL_SINGLE_PER_S)}), p99 {single_p99:.1f} ms vs "
        f"≤ {GOAL_SINGLE_P99_MS:g} ms ({verdict(single_p99 <= GOAL_SINGLE_P99_MS)}); batched "
        f"{batched.per_second:,.0f} events/s vs ≥ {GOAL_BATCHED_PER_S:,} "
        f"({verdict(batched.per_second >= GOAL_BATCHED_PER_S)})"
    )


# -- what tracing costs when off ----------------------------------------------------


def _gateway_with_tracing_bypassed_main() -> int:
    """The gateway with ``riverbed.tracing``'s hooks on its request path replaced by nothing,
    before any gateway module imports them: the request-span middleware is not built at all,
    the publisher does not look for a span to stamp events with, and tracing is never
    configured. What the gateway would be without the tracing code."""
    from riverbed import tracing

    tracing.TracedRequests = lambda app: app  # type: ignore[assignment,misc]
    tracing.stamp = lambda events: events
    tracing.configure_tracing = lambda *args, **kwargs: False  # type: ignore[assignment]
    from riverbed_gateway.cli import main as gateway_main

    return gateway_main(["serve"])


async def _tracing_cost(
    url: str, monitor: RawRedis, workdir: Path, comparison: Comparison, repeat: int
) -> list[str]:
    """The single-event load against the gateway with tracing off and the same gateway with
    the tracing hooks bypassed, rounds alternating; best of ``repeat`` each."""
    runs: dict[bool, list[Run]] = {False: [], True: []}  # tracing_bypassed -> rounds
    async with (
        running_gateway(url, workdir) as shipped,
        running_gateway(url, workdir, tracing_bypassed=True) as bypassed,
    ):
        sides = {
            False: GatewaySide(shipped, monitor, workdir),
            True: GatewaySide(bypassed, monitor, workdir),
        }
        try:
            for side in sides.values():
                await side.prepare()
                await side.round(
                    comparison.bodies[: comparison.warm_up], comparison.path, comparison.concurrency
                )
            for round_ in range(repeat):
                for key in (False, True) if round_ % 2 else (True, False):
                    runs[key].append(
                        await sides[key].round(
                            comparison.bodies, comparison.path, comparison.concurrency
                        )
                    )
        finally:
            for side in sides.values():
                await side.finish()
    _report_refusals("gateway-single-tracing", runs[False] + runs[True])
    hooks = await _hooks_off_us()
    note(f"gateway-single-tracing: the off path's hooks alone, in this process: {hooks}")
    off, without = _fastest(runs[False]), _fastest(runs[True])
    name, baseline = "gateway-single-tracing-off", "gateway-single-tracing-bypassed"
    lines = [emit(bench_line(name, off.per_second, "events/s", baseline, without.per_second))]
    for q in (50, 99):
        lines.append(
            emit(
                ms_line(
                    f"{name}-p{q}",
                    off.percentile_ms(q),
                    f"{baseline}-p{q}",
                    without.percentile_ms(q),
                )
            )
        )
    return lines


async def _hooks_off_us() -> str:
    """Per call, what the request-span middleware and the publisher's stamping cost with
    tracing off, against calling the app and passing the events directly: CPU time without
    the noise of HTTP rounds."""
    from riverbed import tracing

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    traced = tracing.TracedRequests(app)
    scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": []}
    events = make_events(1)
    calls = 200_000

    async def timed(call: Callable[[], Awaitable[object]]) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        return (time.perf_counter() - started) / calls * 1e6

    async def stamped() -> object:
        return tracing.stamp(events)

    async def passed() -> object:
        return events

    async def measure() -> tuple[float, float, float, float]:
        return (
            await timed(lambda: traced(scope, None, None)),  # type: ignore[arg-type]
            await timed(lambda: app(scope, None, None)),
            await timed(stamped),
            await timed(passed),
        )

    layer, bare, stamp, direct = await measure()
    return (
        f"request-span middleware {layer - bare:.3f} µs a request ({layer:.3f} vs {bare:.3f}), "
        f"stamping {stamp - direct:.3f} µs an append ({stamp:.3f} vs {direct:.3f})"
    )


# -- profiling ----------------------------------------------------------------------


def _py_spy() -> str | None:
    # the virtualenv's own first: `uv run` puts it on PATH, a bare interpreter may not
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


async def _profiled_rounds(
    url: str, monitor: RawRedis, workdir: Path, comparisons: list[Comparison]
) -> None:
    """Run each load once more against a sampled (py-spy) or instrumented (cProfile) gateway."""
    spy = _py_spy()
    async with running_gateway(url, workdir, cprofile=spy is None) as gateway:
        side = GatewaySide(gateway, monitor, workdir)
        await side.prepare()
        recorder = None
        samples_path = workdir / "py-spy.txt"
        if spy is not None:
            recorder = await asyncio.create_subprocess_exec(
                spy,
                "record",
                "--pid",
                str(gateway.process.pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nolineno",
                "--output",
                str(samples_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(0.5)  # let it attach before the load starts
        try:
            for comparison in comparisons:
                await side.round(comparison.bodies, comparison.path, comparison.concurrency)
        finally:
            await side.finish()
    if recorder is not None:
        _, err = await recorder.communicate()  # it writes its samples when the gateway exits
        if recorder.returncode == 0 and samples_path.exists():
            _print_py_spy(samples_path)
            return
        note(f"py-spy could not sample the gateway: {err.decode(errors='replace')[-500:]}")
        return
    if gateway.profile_path is not None and gateway.profile_path.exists():
        _print_cprofile(gateway.profile_path)


def _print_py_spy(samples_path: Path) -> None:
    """Collapsed stacks -> where the gateway spent its time: functions, libraries, our code."""
    own: collections.Counter[str] = collections.Counter()
    by_library: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in samples_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        by_library[_library(frames[-1])] += count
        for frame in set(frames):
            if _library(frame).startswith("riverbed"):
                ours[frame] += count
    if not total:
        note("py-spy recorded no samples")
        return
    tables = (
        ("own samples, by function", own),
        ("own samples, by library", by_library),
        ("inclusive samples, Riverbed's own functions", ours),
    )
    for title, counter in tables:
        rows = "\n".join(
            f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(PROFILE_TOP)
        )
        note(f"gateway hot spots, {title} (py-spy, {total} samples):\n{rows}")


def _library(frame: str) -> str:
    """``read_response (redis/asyncio/connection.py)`` -> ``redis``; stdlib by module."""
    location = frame.rpartition(" (")[2]
    path = location.rstrip(")").split(":", 1)[0]
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") or "?"


def _print_cprofile(profile_path: Path) -> None:
    for sort in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(str(profile_path), stream=out).sort_stats(sort).print_stats(PROFILE_TOP)
        note(f"gateway profile (cProfile) by {sort}:\n{out.getvalue()}")


# -- entry points ---------------------------------------------------------------------


async def run(url: str, options: Options) -> list[str]:
    """Time both comparisons; print and return their figure lines."""
    monitor = RawRedis.from_url(url)  # cleanup and checks, off the timed client
    raw_client = RawRedis.from_url(url)
    workdir = Path(tempfile.mkdtemp(prefix="rb-bench-gateway-"))
    try:
        groups = (
            await monitor.xinfo_groups(GATEWAY_STREAM_KEY)
            if await monitor.exists(GATEWAY_STREAM_KEY)
            else []
        )
        if groups:
            note(
                f"gateway: skipped: {GATEWAY_STREAM_KEY} has {len(groups)} consumer group(s) "
                "on this Redis, and the benchmark would feed them fake payments"
            )
            return []
        comparisons = _comparisons(options)
        note(
            f"gateway: {len(comparisons[0].bodies)} single requests ({SINGLE_CONCURRENCY} in "
            f"flight), {options.events * 2} events in batches of {BATCH} ({BATCH_CONCURRENCY} "
            "in flight), over HTTP from a load generator process"
        )
        lines: list[str] = []
        results: list[Run] = []
        async with running_gateway(url, workdir) as gateway:
            side = GatewaySide(gateway, monitor, workdir)
            await side.prepare()
            try:
                for comparison in comparisons:
                    http, raw = await _compare(
                        comparison, side, raw_client, monitor, options.repeat
                    )
                    results.append(http)
                    lines.append(
                        emit(
                            bench_line(
                                comparison.name,
                                http.per_second,
                                "events/s",
                                comparison.baseline_name,
                                raw.per_second,
                            )
                        )
                    )
                    for q in (50, 99):
                        lines.append(
                            emit(
                                ms_line(
                                    f"{comparison.name}-p{q}",
                                    http.percentile_ms(q),
                                    f"{comparison.baseline_name}-p{q}",
                                    raw.percentile_ms(q),
                                )
                            )
                        )
                lines += await _fixed_rate(
                    comparisons[0], side, url, monitor, results[0], options.repeat
                )
            finally:
                await side.finish()
        _goals(*results)
        lines += await _tracing_cost(url, monitor, workdir, comparisons[0], options.repeat)
        if options.profile:
            await _profiled_rounds(url, monitor, workdir, comparisons)
        return lines
    finally:
        await raw_client.aclose()
        await monitor.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LOAD_GENERATOR_FLAG]:
        return _load_generator_main(argv[1])
    if argv[:1] == [BYPASSED_TRACING_FLAG]:
        return _gateway_with_tracing_bypassed_main()
    options = parse_options(__doc__.splitlines()[0], argv)
    with bench_redis() as (url, where):
        note(f"Redis: {where}; best of {options.repeat} rounds after a warm-up")
        eventloop.run(run(url, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
