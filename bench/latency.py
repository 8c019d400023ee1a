"""End-to-end latency: gateway receive → handler start, versus raw XADD → XREADGROUP.

- ``latency-e2e-p50``, ``-p99``, ``-p99.9``: ``payment.succeeded.v1`` events posted one a
  request to a gateway process (started as ``bench/gateway.py`` starts it) at a fixed rate,
  open-loop, by a load generator process, and handled by a no-op handler of a
  ``StreamConsumer`` with the default settings in a process of its own. Latency is handler
  start minus the gateway's receive time (ms, both ``time.time()`` on this machine).
  Baseline ``raw-xadd-xreadgroup``: a producer process ``XADD``ing at the same rate,
  open-loop, its send time in the entry, and a reader process blocking on
  ``XREADGROUP COUNT 100``: reader receipt minus send time.
- ``latency-e2e-rate``: events per second handled in the measured window, against the
  raw reader's. Below the asked rate means the load was not delivered as scheduled.

The gateway's receive time is taken from its own access log, as it runs in production
(JSON, one line a request, no change to the gateway): the line's ``timestamp`` (wall
clock, µs, taken as the line is written once the answer is sent) minus its
``duration_ms`` (measured from the moment the outermost ASGI middleware got the
request, 10 µs resolution). Each request carries its own ``X-Request-Id``, which the
gateway puts into the event as ``correlationid``: the handler's record and the log line
are joined on it. The event's CloudEvent ``time`` is *not* the receive time: the gateway
sets it as it builds the event, after authentication, body reading and validation;
stderr shows how far after receive it falls, and the latency from it, as a cross-check.

Open-loop: request ``i`` is started at ``start + i / rate`` whatever earlier requests
are doing, over a pool of keep-alive connections opened beforehand (more are opened if
every one is busy); how late each was started (the sender's own lag) goes to stderr, so
a saturated load generator shows. The first second of each side is a warm-up, not counted.

Goal (issue #16, reported on stderr, never asserted): p99 ≤ 20 ms and ≤ 3 times the raw p99.

Run alone: ``uv run --frozen python bench/latency.py [--rate N] [--seconds S]`` (1,000/s
for 30 s by default); ``bench/run_all.py`` runs it for 30 s, or 10 s when ``--events``
is below its default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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
    percentile,
    quiet_runtime_logs,
    unique_stream,
)
from gateway import (
    CLIENT_SOURCE,
    GATEWAY_STREAM_KEY,
    Gateway,
    _cpu_seconds,
    _local_redis_pid,
    running_gateway,
    warm_session,
)

from riverbed import eventloop, keys
from riverbed.connection import connect
from riverbed.consumer import Message, StreamConsumer, Subscription
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed.testing import TEST_STREAM
from riverbed_gateway.keys import rate_limit_key

DEFAULT_RATE = 1_000  # events/s
DEFAULT_SECONDS = 30.0
QUICK_SECONDS = 10.0  # run_all with --events below its default
FULL_EVENTS = 50_000  # run_all's default --events
WARM_UP_S = 1.0  # sent at the same rate before the measured window, not counted
CONNECTIONS = 64  # keep-alive connections opened before the clock starts
#: at most this many at once: beyond, a call waits for a free one (after its scheduled
#: start: the wait shows in the scheduled → handled figure on stderr)
MAX_CONNECTIONS = 256
BODIES = 1_000  # distinct bodies, posted in turn (the gateway gives each event its own id)
DRAIN_TIMEOUT_S = 60.0
GOAL_P99_MS = 20.0
GOAL_P99_RATIO = 3.0
QUANTILES = (50.0, 99.0, 99.9)
ROLE_FLAG = "--role"
THIS_FILE = Path(__file__).resolve()


def _q(q: float) -> str:
    return f"p{q:g}"


# -- the open-loop schedule (the load generator and the raw producer) ----------------


@dataclass(frozen=True)
class Schedule:
    """How an open-loop run went: when it was to start, how late each call started."""

    wall_start: float  # time.time() at which call 0 was due; call i at + i / rate
    lags_s: list[float]  # how late each call started, s
    errors: list[str]  # what the calls that raised raised


async def open_loop(count: int, rate: float, fire: Callable[[int], Awaitable[None]]) -> Schedule:
    """Start ``fire(i)`` at ``start + i / rate`` for each ``i`` whatever the earlier calls
    are doing (lateness measured as its task begins); every call has ended on return."""
    lags = [0.0] * count
    errors: list[str] = []
    running: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    wall_start = time.time() + (start - time.perf_counter())

    async def timed(i: int) -> None:
        lags[i] = time.perf_counter() - (start + i / rate)
        try:
            await fire(i)
        except Exception as error:  # counted and shown, never lost with its task
            errors.append(f"{type(error).__name__}: {error}")

    i = 0
    while i < count:
        now = time.perf_counter()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < count and start + i / rate <= now:  # everything due by now, at once
            task = asyncio.create_task(timed(i))
            running.add(task)
            task.add_done_callback(running.discard)
            i += 1
    while running:
        await asyncio.gather(*running)
    return Schedule(wall_start, lags, errors)


def _note_scheduled(name: str, delays_s: list[float]) -> None:
    """Scheduled send → handled: what a client on the schedule saw, waits for a connection
    and for the sender itself included (no coordinated omission)."""
    ordered = sorted(delay * 1000 for delay in delays_s)
    quantiles = ", ".join(f"{_q(q)} {percentile(ordered, q):.2f} ms" for q in QUANTILES)
    note(f"{name}: from the scheduled send time to handled: {quantiles}")


def _lag_summary(lags_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(lag * 1000 for lag in lags_s)
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99), "max": ordered[-1]}


# -- the processes this file is run as (ROLE_FLAG <role> <plan>) ----------------------


async def _load(plan: dict[str, Any]) -> dict[str, Any]:
    """POST ``count`` events at ``rate``, open-loop; statuses, lags, accepted indexes."""
    import aiohttp  # only the load generator needs it

    bodies = [
        json.dumps({"type": e.type, "data": e.data, "source": CLIENT_SOURCE}).encode()
        for e in make_events(BODIES)
    ]
    count, rate, prefix = int(plan["count"]), float(plan["rate"]), plan["request_prefix"]
    statuses: dict[str, int] = {}
    failures: list[str] = []
    accepted: list[int] = []
    entry_ids: list[str] = []
    headers = {"Authorization": f"Bearer {plan['api_key']}", "Content-Type": "application/json"}
    async with warm_session(
        plan["base_url"], headers, limit=MAX_CONNECTIONS, warm=CONNECTIONS
    ) as session:

        async def post(i: int) -> None:
            try:
                async with session.post(
                    "/v1/events", data=bodies[i % BODIES], headers={"X-Request-Id": f"{prefix}{i}"}
                ) as response:
                    answer = await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                failures.append(f"{type(error).__name__}: {error}")
                return
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
            if response.status == 202:
                accepted.append(i)
                entry_ids.append(json.loads(answer)["entry_id"])

        cpu_before = time.process_time()
        started = time.perf_counter()
        schedule = await open_loop(count, rate, post)
        cpu = (time.process_time() - cpu_before) / (time.perf_counter() - started)
    failures += schedule.errors
    return {
        "statuses": statuses,
        "failures": len(failures),
        "failure_samples": failures[:5],
        "accepted": accepted,
        "entry_ids": entry_ids,
        "lags_s": schedule.lags_s,
        "wall_start": schedule.wall_start,
        "cpu": cpu,
    }


async def _consume(plan: dict[str, Any]) -> dict[str, Any]:
    """A StreamConsumer with the default settings and a no-op handler that notes, first
    thing, when it started; runs until SIGTERM."""
    quiet_runtime_logs()
    client = connect(RedisSettings(url=plan["redis_url"]))
    handled: list[tuple[str | None, float, float]] = []

    async def handler(message: Message[Any]) -> None:
        now = time.time()
        handled.append((message.event.correlationid, now, message.event.time.timestamp()))

    consumer = StreamConsumer(
        client,
        Subscription(stream=TEST_STREAM, group=plan["group"], handler=handler),
        settings=ConsumerSettings(),
        consumer_name="bench-latency",
        service="bench",
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    main = consumer.start()
    print("ready", flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
    consumer.stop()
    await main
    await client.aclose()
    return {"handled": handled}


async def _raw_produce(plan: dict[str, Any]) -> dict[str, Any]:
    """XADD ``count`` entries at ``rate``, open-loop, each with its send time."""
    # beyond MAX_CONNECTIONS a call waits for a free connection (the default pool refuses)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        plan["redis_url"], max_connections=MAX_CONNECTIONS, timeout=None
    )
    client = RawRedis(connection_pool=pool)
    entry: dict[Any, Any] = make_events(1)[0].to_entry()
    key = plan["key"]
    await asyncio.gather(*(client.ping() for _ in range(CONNECTIONS)))  # open the pool

    async def xadd(i: int) -> None:
        await client.xadd(key, {**entry, "i": str(i), "t": repr(time.time())})

    cpu_before = time.process_time()
    started = time.perf_counter()
    schedule = await open_loop(int(plan["count"]), float(plan["rate"]), xadd)
    cpu = (time.process_time() - cpu_before) / (time.perf_counter() - started)
    await client.aclose()
    await pool.aclose()
    errors = schedule.errors
    return {
        "lags_s": schedule.lags_s,
        "wall_start": schedule.wall_start,
        "cpu": cpu,
        "failures": len(errors),
        "failure_samples": errors[:5],
    }


async def _raw_read(plan: dict[str, Any]) -> dict[str, Any]:
    """XREADGROUP BLOCK until SIGTERM: (index, send time, receipt time) of each entry."""
    client = RawRedis.from_url(plan["redis_url"])
    key, group = plan["key"], plan["group"]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await client.ping()
    print("ready", flush=True)
    cpu_before = time.process_time()
    received: list[tuple[int, float, float]] = []
    while not stop.is_set():
        reply: Any = await client.xreadgroup(group, "reader", {key: ">"}, count=100, block=500)
        now = time.time()
        if not reply:
            continue
        entries = reply[0][1]
        received.extend((int(fields[b"i"]), float(fields[b"t"]), now) for _id, fields in entries)
        await client.xack(key, group, *(entry_id for entry_id, _fields in entries))
    await client.aclose()
    return {"received": received, "cpu_s": time.process_time() - cpu_before}


ROLES: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]] = {
    "load": _load,
    "consumer": _consume,
    "raw-producer": _raw_produce,
    "raw-reader": _raw_read,
}


def _role_main(role: str, plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    result: dict[str, Any] = eventloop.run(ROLES[role](plan))
    Path(plan["result"]).write_text(json.dumps(result))
    return 0


# -- running the processes --------------------------------------------------------------


@dataclass
class Child:
    """A role process this benchmark started, and where it writes its result."""

    process: asyncio.subprocess.Process
    result_path: Path

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        if line.strip() != b"ready":
            await self.process.wait()
            raise RuntimeError(f"a bench process failed to start:\n{await self._stderr()}")

    async def result(self, within: float = DRAIN_TIMEOUT_S + 60) -> dict[str, Any]:
        await asyncio.wait_for(self.process.wait(), timeout=within)
        if self.process.returncode != 0:
            raise RuntimeError(
                f"a bench process exited with {self.process.returncode}:\n{await self._stderr()}"
            )
        result: dict[str, Any] = json.loads(self.result_path.read_text())
        return result

    async def kill(self) -> None:
        """End the process if it is still running (a side that failed half-way)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def _stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")[-3000:]


async def start_role(role: str, plan: dict[str, Any], workdir: Path) -> Child:
    plan_path = workdir / f"{role}.plan.json"
    result_path = workdir / f"{role}.result.json"
    plan_path.write_text(json.dumps({**plan, "result": str(result_path)}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(THIS_FILE),
        ROLE_FLAG,
        role,
        str(plan_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Child(process, result_path)


class CpuWatch:
    """Share of one core each watched local process used between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.before: dict[str, float | None] = {}
        self.started = 0.0
        self.seconds = 0.0  # from start() to stop()

    def start(self) -> None:
        self.before = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        self.seconds = seconds = time.perf_counter() - self.started
        shares: dict[str, float] = {}
        for name, pid in self.pids.items():
            before, after = self.before.get(name), _cpu_seconds(pid)
            if before is not None and after is not None:
                shares[name] = (after - before) / seconds
        return shares


def _cpu_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {100 * share:.0f}%" for name, share in shares.items())


# -- the two sides ------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side's measured window: latencies (ms, sorted), rate handled, sender lag."""

    latencies_ms: list[float]
    per_second: float
    lag_ms: dict[str, float]
    cpu: dict[str, float]


def _window_rate(handled: int, lags_s: Sequence[float], warm: int, rate: float) -> float:
    """Events handled per second of the measured window, as the sender actually sent it."""
    measured = lags_s[warm:]
    span = (len(measured) - 1) / rate + measured[-1] - measured[0] + 1 / rate
    return handled / span if span > 0 else 0.0


async def raw_side(url: str, monitor: RawRedis, rate: float, seconds: float, workdir: Path) -> Side:
    stream = unique_stream("latency.raw")
    key = keys.stream_key(stream)
    await monitor.xgroup_create(key, "bench", id="0", mkstream=True)
    count, warm = round(rate * (seconds + WARM_UP_S)), round(rate * WARM_UP_S)
    plan = {"redis_url": url, "key": key, "group": "bench", "count": count, "rate": rate}
    reader = producer = None
    try:
        reader = await start_role("raw-reader", plan, workdir)
        await reader.ready()
        # the reader exits once it has read everything: it reports its own CPU time
        watch = CpuWatch({"redis": await _local_redis_pid(monitor)})
        watch.start()
        producer = await start_role("raw-producer", plan, workdir)
        produced = await producer.result(within=seconds + DRAIN_TIMEOUT_S)
        cpu = {**watch.stop(), "producer": produced["cpu"]}
        await _drained(monitor, key, "bench")
        reader.process.send_signal(signal.SIGTERM)
        read = await reader.result(within=DRAIN_TIMEOUT_S)
        received = read["received"]
        cpu["reader"] = read["cpu_s"] / watch.seconds
    finally:
        for child in (reader, producer):
            if child is not None:
                await child.kill()
        await delete_stream_family(monitor, stream)
    timed = [(i, sent, at) for i, sent, at in received if i >= warm]
    latencies = sorted((at - sent) * 1000 for _i, sent, at in timed)
    wall_start = produced["wall_start"]
    _note_scheduled("raw-xadd-xreadgroup", [at - (wall_start + i / rate) for i, _s, at in timed])
    lags = produced["lags_s"]
    note(f"raw-xadd-xreadgroup: {len(latencies)} of {count - warm} timed entries read")
    if produced["failures"]:
        note(
            f"raw-xadd-xreadgroup: {produced['failures']} XADDs failed, e.g. "
            f"{produced['failure_samples']}"
        )
    return Side(latencies, _window_rate(len(latencies), lags, warm, rate), _lag_summary(lags), cpu)


async def _drained(monitor: RawRedis, key: str, group: str) -> None:
    """Wait until the group has read every entry and acknowledged it (handler done)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        for info in await monitor.xinfo_groups(key):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name == group and info["pending"] == 0 and info.get("lag") == 0:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{group} had not handled every entry of {key} {DRAIN_TIMEOUT_S:g} s after")


async def _probe(gateway: Gateway, monitor: RawRedis, group: str) -> str:
    """Post one event and wait until it is handled: the consumer is reading, the gateway
    and its Redis connections are warm (its request id is not counted)."""
    body = {"type": "payment.succeeded.v1", "data": make_events(1)[0].data, "source": CLIENT_SOURCE}
    headers = {"Authorization": f"Bearer {gateway.api_key}", "X-Request-Id": "probe"}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10.0) as client:
        response = await client.post("/v1/events", json=body, headers=headers)
    if response.status_code != 202:
        raise RuntimeError(f"the probe was answered {response.status_code}: {response.text}")
    await _drained(monitor, GATEWAY_STREAM_KEY, group)
    return str(response.json()["entry_id"])


async def _clean_gateway_stream(
    monitor: RawRedis, group: str, existed: bool, entry_ids: Sequence[str], gateway: Gateway
) -> None:
    """Remove what the run wrote: its group and the group's keys, its entries (the whole
    stream when it did not exist before), the API key's rate-limit state."""
    await monitor.xgroup_destroy(GATEWAY_STREAM_KEY, group)
    await monitor.unlink(
        keys.idempotency_key(TEST_STREAM, group),
        keys.heartbeats_key(TEST_STREAM, group),
        rate_limit_key(gateway.key_name),
    )
    if not existed:
        await monitor.unlink(GATEWAY_STREAM_KEY)
        return
    for start in range(0, len(entry_ids), 1_000):
        await monitor.xdel(GATEWAY_STREAM_KEY, *entry_ids[start : start + 1_000])


def _receive_times(log_path: Path, prefix: str) -> dict[str, float]:
    """Request id -> when the gateway received it (s since the epoch), from its access log:
    the line's timestamp minus the request's duration."""
    received: dict[str, float] = {}
    with log_path.open(errors="replace") as log:
        for line in log:
            if prefix not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                request_id = record.get("request_id", "")
                if record.get("event") == "request" and request_id.startswith(prefix):
                    at = datetime.fromisoformat(record["timestamp"]).timestamp()
                    received[request_id] = at - record["duration_ms"] / 1000
    return received


@dataclass
class E2eRun:
    """What the gateway side's processes reported."""

    load: dict[str, Any]
    handled: list[tuple[str | None, float, float]]
    cpu: dict[str, float]
    log_path: Path


async def _e2e_run(
    url: str, monitor: RawRedis, rate: float, seconds: float, workdir: Path, prefix: str
) -> E2eRun:
    group = f"bench-latency-{prefix.strip('-')}"
    count = round(rate * (seconds + WARM_UP_S))
    entry_ids: list[str] = []
    async with running_gateway(url, workdir) as gateway:
        existed = bool(await monitor.exists(GATEWAY_STREAM_KEY))
        await monitor.xgroup_create(GATEWAY_STREAM_KEY, group, id="$", mkstream=True)
        consumer = load = None
        try:
            consumer = await start_role("consumer", {"redis_url": url, "group": group}, workdir)
            await consumer.ready()
            entry_ids.append(await _probe(gateway, monitor, group))
            pids = {"gateway": gateway.process.pid, "consumer": consumer.process.pid}
            watch = CpuWatch({**pids, "redis": await _local_redis_pid(monitor)})
            watch.start()
            plan = {
                "base_url": gateway.base_url,
                "api_key": gateway.api_key,
                "request_prefix": prefix,
                "count": count,
                "rate": rate,
            }
            load = await start_role("load", plan, workdir)
            result = await load.result(within=seconds + DRAIN_TIMEOUT_S)
            entry_ids += result["entry_ids"]
            cpu = {**watch.stop(), "load generator": result["cpu"]}
            await _drained(monitor, GATEWAY_STREAM_KEY, group)
            consumer.process.send_signal(signal.SIGTERM)
            handled = (await consumer.result(within=DRAIN_TIMEOUT_S))["handled"]
        finally:
            for child in (consumer, load):
                if child is not None:
                    await child.kill()
            await _clean_gateway_stream(monitor, group, existed, entry_ids, gateway)
    # the gateway has stopped: its log is complete on disk
    return E2eRun(result, [tuple(h) for h in handled], cpu, gateway.log_path)


async def e2e_side(url: str, monitor: RawRedis, rate: float, seconds: float, workdir: Path) -> Side:
    prefix = f"lat-{secrets.token_hex(4)}-"
    run = await _e2e_run(url, monitor, rate, seconds, workdir, prefix)
    load = run.load
    warm = round(rate * WARM_UP_S)
    received = _receive_times(run.log_path, prefix)
    latencies, stamped, from_time, scheduled = [], [], [], []
    wall_start = load["wall_start"]
    seen: set[str] = set()
    for correlation_id, handled_at, event_time in run.handled:
        if not correlation_id or not correlation_id.startswith(prefix) or correlation_id in seen:
            continue
        seen.add(correlation_id)
        at = received.get(correlation_id)
        index = int(correlation_id.removeprefix(prefix))
        if index < warm or at is None:
            continue
        scheduled.append(handled_at - (wall_start + index / rate))
        latencies.append((handled_at - at) * 1000)
        stamped.append((event_time - at) * 1000)
        from_time.append((handled_at - event_time) * 1000)
    accepted = sum(1 for i in load["accepted"] if i >= warm)
    refused = {status: n for status, n in load["statuses"].items() if status != "202"}
    note(
        f"latency-e2e: {accepted} of {len(load['lags_s']) - warm} timed requests answered 202"
        + (f"; other answers {refused}" if refused else "")
        + (
            f"; {load['failures']} without an answer, e.g. {load['failure_samples']}"
            if load["failures"]
            else ""
        )
        + f"; {len(latencies)} of them handled and found in the gateway's access log"
    )
    stamped.sort()
    from_time.sort()
    note(
        "latency-e2e cross-check: the event's CloudEvent time is set "
        f"{percentile(stamped, 50):.2f} ms (p50), {percentile(stamped, 99):.2f} ms (p99) after "
        f"receive; handler start minus that time: p50 {percentile(from_time, 50):.2f} ms, "
        f"p99 {percentile(from_time, 99):.2f} ms, p99.9 {percentile(from_time, 99.9):.2f} ms"
    )
    _note_scheduled("latency-e2e", scheduled)
    rate_handled = _window_rate(len(latencies), load["lags_s"], warm, rate)
    return Side(sorted(latencies), rate_handled, _lag_summary(load["lags_s"]), run.cpu)


# -- entry points ---------------------------------------------------------------------------


def _describe(name: str, side: Side) -> None:
    lag = side.lag_ms
    note(
        f"{name}: sender behind schedule p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, "
        f"max {lag['max']:.1f} ms; max latency {side.latencies_ms[-1]:.1f} ms; "
        f"CPU (share of one core) {_cpu_text(side.cpu)}"
    )
    if lag["p99"] > 5:
        note(f"{name}: the sender fell behind its schedule: the load was not delivered as asked")


def _goals(e2e: Side, raw: Side) -> None:
    p99, raw_p99 = percentile(e2e.latencies_ms, 99), percentile(raw.latencies_ms, 99)
    absolute = "met" if p99 <= GOAL_P99_MS else "not met"
    relative = "met" if p99 <= GOAL_P99_RATIO * raw_p99 else "not met"
    note(
        f"goal (issue #16) latency-e2e p99 {p99:.2f} ms ≤ {GOAL_P99_MS:g} ms: {absolute}; "
        f"≤ {GOAL_P99_RATIO:g} x raw p99 ({raw_p99:.2f} ms, ratio {p99 / raw_p99:.2f}): {relative}"
    )


async def measure(url: str, rate: float, seconds: float) -> list[str]:
    """Time both sides, one after the other; print and return their figure lines."""
    monitor = RawRedis.from_url(url)
    workdir = Path(tempfile.mkdtemp(prefix="rb-bench-latency-"))
    try:
        if await monitor.exists(GATEWAY_STREAM_KEY) and await monitor.xinfo_groups(
            GATEWAY_STREAM_KEY
        ):
            note(
                f"latency: skipped: {GATEWAY_STREAM_KEY} has consumer groups on this Redis, "
                "and the benchmark would feed them fake payments"
            )
            return []
        note(
            f"latency: {rate:g} events/s for {seconds:g} s (after {WARM_UP_S:g} s of warm-up), "
            "open-loop: gateway receive → handler start, then raw XADD → XREADGROUP"
        )
        e2e = await e2e_side(url, monitor, rate, seconds, workdir)
        raw = await raw_side(url, monitor, rate, seconds, workdir)
        lines = [
            emit(
                ms_line(
                    f"latency-e2e-{_q(q)}",
                    percentile(e2e.latencies_ms, q),
                    f"raw-xadd-xreadgroup-{_q(q)}",
                    percentile(raw.latencies_ms, q),
                )
            )
            for q in QUANTILES
        ]
        lines.append(
            emit(
                bench_line(
                    "latency-e2e-rate",
                    e2e.per_second,
                    "events/s",
                    "raw-xadd-xreadgroup-rate",
                    raw.per_second,
                )
            )
        )
        _describe("latency-e2e", e2e)
        _describe("raw-xadd-xreadgroup", raw)
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        note(
            f"load average (1 min) {load:.2f} on {cores} cores"
            + (": other work shared the CPU, the tails are its too" if load > cores else "")
        )
        _goals(e2e, raw)
        return lines
    finally:
        await monitor.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


async def run(url: str, options: Options) -> list[str]:
    """``run_all``'s entry: 30 s at the default ``--events``, 10 s below it."""
    seconds = DEFAULT_SECONDS if options.events >= FULL_EVENTS else QUICK_SECONDS
    return await measure(url, DEFAULT_RATE, seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [ROLE_FLAG]:
        return _role_main(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="events/s (1000)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="timed s (30)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    with bench_redis() as (url, where):
        note(f"Redis: {where}")
        eventloop.run(measure(url, args.rate, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
