"""make chaos: the whole stack under faults, and a count of what was lost or doubled.

``uv run python tests/chaos/run.py [--short]`` (``make chaos``, ``make chaos
CHAOS_ARGS=--short``). Not part of ``make test``: it takes minutes and the machine's
cores. Everything listens on 127.0.0.1 and everything it starts is stopped at the end,
also on Ctrl-C (a second Ctrl-C kills at once) or on a failure.

1. Starts a throwaway ``redis-server`` with ``deploy/redis/redis.conf`` (AOF, fsync
   every second) on a free port, the four services as separate processes (as ``make
   run`` does; settings that differ are in ``chaos_stack.CHAOS_SETTINGS``), an SMTP relay
   that records every message by Message-ID and a webhook receiver that verifies every
   request with ``standardwebhooks`` (``chaos_recorders``); registers an endpoint for
   ``payment.*`` through the webhooks API.
2. Posts a bounded mix through the gateway: emails (raw and templated), payments with a
   receipt address, refunds of some of them; each with its own event id, retried on
   errors with the same id, within a time budget.
3. Injects the faults of the plan (:data:`FULL` or :data:`SHORT`) on a schedule.
4. Waits until the stack is quiet: no group has pending or unread entries, the delay
   stores hold only retries more than :data:`LONG_RETRY_S` away, the payments outbox is
   empty, nothing new arrived for a few seconds; bounded.
5. Prints a table per domain (``chaos_judge``) and exits 1 on any loss or double outside
   the README's accepted windows (``chaos_judge.ACCEPTED_WINDOWS``), on a signature
   failure, on a service that died on its own, or when the stack did not settle.

Logs, the Redis data and the databases of a run stay in ``var/chaos/<time>-<mode>/``
(the last five runs are kept), with the table in ``table.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
from chaos_judge import (
    CLOCK_SLACK_S,
    REDIS_CRASH_LOSS_S,
    Booked,
    Delivered,
    Fault,
    Mailed,
    Published,
    Records,
    RowResult,
    StreamItem,
    build_results,
    delay_store_items,
    item_from_fields,
    records_from_json,
    records_to_json,
    render_findings,
    render_table,
    verdict,
)
from chaos_recorders import SmtpRecorder, WebhookReceiver
from chaos_stack import (
    EMAIL_SEND_LEASE_S,
    ROOT,
    SERVICE_NAMES,
    WEBHOOKS_REQUEST_TIMEOUT_S,
    Stack,
    load_launcher,
    settings_summary,
)

RUNS_DIR = ROOT / "var" / "chaos"
RUNS_KEPT = 5
#: s Redis stays down after a SHUTDOWN or kill -9 before it is started again, as a
#: restarted pod would be: long enough that clients see errors and reconnect
REDIS_DOWN_S = 2.0
#: s after its payment's 202 that a refund is posted (so it rarely overtakes it)
REFUND_LAG_S = 5.0
#: s; one event's posting, retries included, gives up after this: longer than the
#: gateway's in-flight claim (GATEWAY_IN_FLIGHT_TTL_S, 30 s), which answers 409 until it
#: lapses when Redis went away before the claim could be released
POST_BUDGET_S = 45.0
#: requests to the gateway in flight at once
POST_CONCURRENCY = 32
#: s; a delay-store item due later than this counts as a long retry, not as work to wait for
LONG_RETRY_S = 120.0
#: consecutive quiet looks, 1 s apart, before the stack counts as settled
QUIET_LOOKS = 3
OUTCOME_STREAMS = (
    "email.sent",
    "payment.recorded",
    "payment.refund.recorded",
    "webhook.delivery.succeeded",
)
PROVIDER = "chaos"
#: redis-py's asyncio client; its stubs type replies as bytes | str | None whatever
#: decode_responses says, so the replies are read as the strings they are
RedisClient = Any
#: recipient domains spread over, so the email service's per-domain pace (5/s) never binds
EMAIL_DOMAINS = 61


# -- the plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A fault at ``at`` s into the workload; ``seconds``: how long an outage lasts."""

    at: float
    action: (
        str  # kill9 | sigterm | redis-shutdown | redis-kill9 | smtp-down | hooks-500 | hooks-slow
    )
    target: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Plan:
    name: str
    events: int
    duration_s: float  # s over which the events are posted
    settle_s: float  # s to wait for quiet at most
    steps: tuple[Step, ...]


FULL = Plan(
    name="full",
    events=5_000,
    duration_s=160.0,
    settle_s=240.0,
    steps=(
        Step(12, "kill9", "email"),
        Step(25, "smtp-down", seconds=20),
        Step(38, "kill9", "webhooks"),
        Step(50, "hooks-500", seconds=30),
        Step(62, "sigterm", "payments"),
        Step(88, "redis-shutdown"),
        Step(100, "hooks-slow", seconds=30),
        Step(112, "kill9", "email"),
        Step(126, "redis-kill9"),
        Step(140, "kill9", "webhooks"),
    ),
)
SHORT = Plan(
    name="short",
    events=400,
    duration_s=60.0,
    settle_s=75.0,
    steps=(
        Step(5, "kill9", "email"),
        Step(12, "kill9", "webhooks"),
        Step(22, "hooks-500", seconds=10),
        Step(28, "sigterm", "payments"),
        Step(34, "hooks-slow", seconds=10),
        Step(38, "redis-shutdown"),
        Step(46, "smtp-down", seconds=8),
    ),
)


# -- the workload --------------------------------------------------------------------------


@dataclass
class Planned:
    offset: float  # s after the start of the workload
    kind: str  # email | payment | refund
    key: str  # recipient (email), payment id, refund id
    body: dict[str, Any]
    payment: str = ""  # refund: the payment it refunds
    receipt: str = ""  # payment: its receipt address


def plan_workload(events: int, duration_s: float, rng: random.Random) -> list[Planned]:
    """``events`` posts over ``duration_s``: a tenth refunds (of every fourth payment,
    :data:`REFUND_LAG_S` after it), four tenths payments, the rest emails."""
    refunds = events // 10
    payments = refunds * 4
    emails = events - payments - refunds
    base = emails + payments
    span = max(duration_s - REFUND_LAG_S - 1.0, 1.0)
    planned: list[Planned] = []
    paid = 0
    for i in range(base):
        offset = i * span / base
        is_payment = (i * payments) // base != ((i + 1) * payments) // base
        if is_payment:
            payment_id = f"pi_{i:05d}"
            receipt = f"buyer{i}@r{i % EMAIL_DOMAINS}.chaos.test"
            data = {
                "provider": PROVIDER,
                "provider_payment_id": payment_id,
                "amount": 1_000 + rng.randrange(9_000),  # minor units (cents)
                "currency": "EUR",
                "fee_amount": 30,
                "receipt_email": receipt,
                "description": f"Chaos order {i}",
            }
            planned.append(
                Planned(
                    offset, "payment", payment_id, _event("payment.succeeded.v1", data), "", receipt
                )
            )
            if paid % 4 == 0 and len([p for p in planned if p.kind == "refund"]) < refunds:
                refund = {
                    "provider": PROVIDER,
                    "provider_payment_id": payment_id,
                    "provider_refund_id": f"re_{i:05d}",
                    "amount": 100,  # minor units; below every payment's amount
                    "currency": "EUR",
                }
                planned.append(
                    Planned(
                        offset + REFUND_LAG_S,
                        "refund",
                        f"re_{i:05d}",
                        _event("payment.refunded.v1", refund),
                        payment_id,
                    )
                )
            paid += 1
        else:
            to = f"user{i}@d{i % EMAIL_DOMAINS}.chaos.test"
            data = (
                {"to": to, "subject": f"Chaos mail {i}", "text": f"Mail {i} of the chaos run."}
                if i % 2
                else {"to": to, "template": "welcome", "variables": {"name": f"User {i}"}}
            )
            planned.append(Planned(offset, "email", to, _event("email.requested.v1", data)))
    return sorted(planned, key=lambda p: p.offset)


def _event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    # the client's own id: a retried POST carries it again and the gateway dedups on it
    return {"type": event_type, "id": str(uuid.uuid4()), "data": data}


@dataclass
class GatewayStats:
    posted: int = 0
    accepted: int = 0
    requests: int = 0
    retried_requests: int = 0
    gave_up: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    skipped_refunds: int = 0


class Workload:
    def __init__(
        self, client: httpx.AsyncClient, url: str, api_key: str, redis_kills: list[float]
    ) -> None:
        self.client = client
        self.url = f"{url}/v1/events"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.redis_kills = redis_kills  # s since the epoch of each kill -9 of Redis so far
        self.stats = GatewayStats()
        self.accepted: dict[str, tuple[Planned, float]] = {}  # event id -> (what, when)
        self.payment_accepted: dict[str, float] = {}  # payment id -> when
        self._slots = asyncio.Semaphore(POST_CONCURRENCY)

    async def run(self, planned: list[Planned], t0: float) -> None:
        async with asyncio.TaskGroup() as group:
            for item in planned:
                wait = t0 + item.offset - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._slots.acquire()
                group.create_task(self._post(item))

    async def _post(self, item: Planned) -> None:
        try:
            if item.kind == "refund" and not self._refundable(item.payment):
                self.stats.skipped_refunds += 1
                return
            self.stats.posted += 1
            await self._deliver(item)
        finally:
            self._slots.release()

    def _refundable(self, payment_id: str) -> bool:
        """A refund is posted only for a payment the gateway accepted outside the loss
        window of a Redis kill -9: the refund of a payment Redis lost would wait 24 h for
        it, by design (payments README, "Events that arrive before their payment")."""
        at = self.payment_accepted.get(payment_id)
        if at is None:
            return False
        return not any(k - REDIS_CRASH_LOSS_S <= at <= k + CLOCK_SLACK_S for k in self.redis_kills)

    async def _deliver(self, item: Planned) -> None:
        deadline = time.monotonic() + POST_BUDGET_S
        for attempt in itertools.count():
            self.stats.requests += 1
            if attempt:
                self.stats.retried_requests += 1
            retry_after = 0.0
            try:
                answer = await self.client.post(self.url, json=item.body, headers=self.headers)
            except httpx.HTTPError as error:
                self.stats.statuses[type(error).__name__] += 1
            else:
                self.stats.statuses[str(answer.status_code)] += 1
                if answer.status_code == 202:
                    now = time.time()
                    self.stats.accepted += 1
                    self.accepted[published_id(answer, item.body["id"])] = (item, now)
                    if item.kind == "payment":
                        self.payment_accepted[item.key] = now
                    return
                if answer.status_code not in {409, 429, 500, 502, 503, 504}:
                    self.stats.refused[answer.status_code] += 1
                    print(f"[chaos] refused {answer.status_code}: {answer.text[:300]}", flush=True)
                    return
                with contextlib.suppress(ValueError):
                    retry_after = float(answer.headers.get("retry-after", "0"))
            pause = min(max(retry_after, 0.25 * 2 ** min(attempt, 3)), 2.0)  # s
            if time.monotonic() + pause > deadline:
                self.stats.gave_up += 1
                return
            await asyncio.sleep(pause)


def published_id(answer: httpx.Response, client_id: str) -> str:
    """The CloudEvent id the gateway put on the stream: the 202's ``event_id`` (a UUIDv5 of
    the API key and the client's id; gateway README, "Event ids"), or its ``id`` from a
    gateway that published the client's id as it was."""
    with contextlib.suppress(ValueError):
        body = answer.json()
        if isinstance(body, dict):
            return str(body.get("event_id") or body.get("id") or client_id)
    return client_id


# -- the run ---------------------------------------------------------------------------------


class Run:
    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.plan = plan
        self.run_dir = run_dir
        free_port = load_launcher().free_port
        self.smtp = SmtpRecorder(free_port())
        self.receiver = WebhookReceiver(free_port(), sender_timeout_s=WEBHOOKS_REQUEST_TIMEOUT_S)
        self.stack = Stack(run_dir, smtp_port=self.smtp.port)
        self.faults: list[Fault] = []
        self.redis_kills: list[float] = []
        self.crashes: list[str] = []
        self.t0 = 0.0
        self.code = code_state()  # the services run from the working tree: which one
        self.busy = asyncio.Lock()  # one process fault at a time, and never with a crash restart

    def say(self, message: str) -> None:
        at = f"t={time.time() - self.t0:6.1f}s " if self.t0 else ""
        print(f"[chaos] {at}{message}", flush=True)

    def connect_redis(self) -> RedisClient:
        return redis.asyncio.Redis.from_url(
            self.stack.redis_url, decode_responses=True, socket_timeout=10
        )

    # -- faults -------------------------------------------------------------------------

    async def inject(self, step: Step) -> None:
        await asyncio.sleep(max(self.t0 + step.at - time.time(), 0))
        start = time.time()
        if step.action in {"kill9", "sigterm", "redis-shutdown", "redis-kill9"}:
            async with self.busy:
                start = time.time()
                try:
                    await self._process_fault(step)
                except RuntimeError as error:  # did not come back: a finding, the run goes on
                    self.say(f"UNEXPECTED: {error}")
                    self.crashes.append(f"{step.target or 'redis'} did not come back: {error}")
        elif step.action == "smtp-down":
            self.say(f"SMTP relay down for {step.seconds:g} s")
            await self.smtp.down()
            await asyncio.sleep(step.seconds)
            await self.smtp.up()
        elif step.action == "hooks-500":
            self.say(f"webhook receiver answers 500 for {step.seconds:g} s")
            self.receiver.failing = True
            await asyncio.sleep(step.seconds)
            self.receiver.failing = False
        elif step.action == "hooks-slow":
            self.say(f"webhook receiver takes 17 s for every 10th request, {step.seconds:g} s")
            self.receiver.slow_every = 10
            await asyncio.sleep(step.seconds)
            self.receiver.slow_every = 0
        kind, target = {
            "kill9": ("kill9", step.target),
            "sigterm": ("sigterm", step.target),
            "redis-shutdown": ("shutdown", "redis"),
            "redis-kill9": ("kill9", "redis"),
            "smtp-down": ("down", "smtp"),
            "hooks-500": ("error500", "receiver"),
            "hooks-slow": ("slow", "receiver"),
        }[step.action]
        self.faults.append(Fault(kind, target, start, time.time()))
        self.say(f"{kind} {target}: back after {time.time() - start:.1f} s")

    async def _process_fault(self, step: Step) -> None:
        stack = self.stack
        if step.action in {"kill9", "sigterm"}:
            sig = signal.SIGKILL if step.action == "kill9" else signal.SIGTERM
            self.say(f"{sig.name} {step.target}")
            stack.send(step.target, sig)
            # s: SIGTERM drains in-flight handlers for up to 30 s (the runtime's default)
            await stack.wait_exit(step.target, 40.0)
            if step.action == "kill9":
                await asyncio.sleep(1.0)  # s: as a supervisor would restart it
            stack.start_service(step.target)
            await stack.wait_ready((step.target,), 90.0)
            return
        if step.action == "redis-shutdown":
            self.say("Redis SHUTDOWN (clean; the AOF is flushed), then started again")
            stack.stopped_on_purpose.add("redis")
            client = self.connect_redis()
            with contextlib.suppress(redis.RedisError):
                await client.execute_command("SHUTDOWN")
            with contextlib.suppress(redis.RedisError):
                await client.aclose()
        else:
            self.say("SIGKILL Redis (the last ~1 s of writes may be lost)")
            self.redis_kills.append(time.time())
            stack.send("redis", signal.SIGKILL)
        await stack.wait_exit("redis", 30.0)
        await asyncio.sleep(REDIS_DOWN_S)
        await asyncio.to_thread(stack.start_redis)

    async def watchdog(self) -> None:
        """A service or Redis that died on its own is a finding; it is started again, as
        a supervisor would, so the rest of the run can still be judged."""
        while True:
            await asyncio.sleep(1.0)
            async with self.busy:
                for line in self.stack.unexpected_exits():
                    name = line.split()[0]
                    self.say(f"UNEXPECTED: {line}; starting it again")
                    self.crashes.append(line)
                    start = time.time()
                    if name == "redis":
                        await asyncio.to_thread(self.stack.start_redis)
                    else:
                        self.stack.start_service(name)
                        with contextlib.suppress(RuntimeError):
                            await self.stack.wait_ready((name,), 90.0)
                    self.faults.append(Fault("crash", name, start, time.time()))

    # -- quiet ------------------------------------------------------------------------------

    async def busy_with(self, client: RedisClient, http: httpx.AsyncClient) -> list[str]:
        """What the stack is still doing; empty when quiet."""
        found: list[str] = []
        horizon_ms = (time.time() + LONG_RETRY_S) * 1000
        for stream in await streams(client):
            key = f"rb:{{{stream}}}:stream"
            for group in await client.xinfo_groups(key):
                name, pending = group["name"], int(group["pending"])
                if pending:
                    found.append(f"{stream}/{name}: {pending} pending")
                unread = await client.xrange(key, f"({group['last-delivered-id']}", "+", count=1)
                if unread:
                    found.append(f"{stream}/{name}: unread entries")
            due = await client.zcount(f"rb:{{{stream}}}:delay", "-inf", horizon_ms)
            if due:
                found.append(f"{stream}: {due} in the delay store due within {LONG_RETRY_S:g} s")
        for name in ("payments", "webhooks"):
            backlog = await outbox_backlog(http, self.stack.base_url(name))
            if backlog:
                found.append(f"{name} outbox: {backlog:g} unpublished")
        if self.receiver.in_flight:
            found.append(f"webhook receiver: {self.receiver.in_flight} requests in flight")
        return found

    async def settle(self, http: httpx.AsyncClient) -> tuple[bool, list[str]]:
        # a request the email service was sending when killed waits out its sending lease
        leases_end = max(
            (f.start + EMAIL_SEND_LEASE_S + 20.0 for f in self.faults if f.target == "email"),
            default=0.0,
        )
        deadline = time.monotonic() + max(self.plan.settle_s, leases_end - time.time())
        quiet, last, busy = 0, (-1, -1), ["not looked yet"]
        client = self.connect_redis()
        try:
            while time.monotonic() < deadline:
                try:
                    busy = await self.busy_with(client, http)
                except (redis.RedisError, httpx.HTTPError) as error:
                    busy = [f"cannot look: {error}"]
                seen = (len(self.smtp.mails), len(self.receiver.hooks))
                quiet = quiet + 1 if not busy and seen == last else 0
                last = seen
                if quiet >= QUIET_LOOKS:
                    return True, []
                await asyncio.sleep(1.0)
        finally:
            await client.aclose()
        return False, busy

    # -- what happened ------------------------------------------------------------------------

    async def collect(self, http: httpx.AsyncClient, workload: Workload) -> Records:
        records = Records()
        for event_id, (item, at) in workload.accepted.items():
            if item.kind == "email":
                records.emails[item.key] = at
            elif item.kind == "payment":
                records.payments[item.key] = at
                records.source_events[event_id] = at
                records.receipt_address[item.key] = item.receipt
            else:
                records.refunds[item.key] = at
                records.source_events[event_id] = at
        records.mails = [Mailed(m.message_id, m.to, m.at) for m in self.smtp.mails]
        records.hooks = [
            Delivered(
                h.webhook_id,
                h.event_type,
                h.data,
                h.status,
                h.arrived,
                h.answered,
                self.receiver.late(h),
            )
            for h in self.receiver.hooks
        ]
        records.delivery_log = await delivery_log(http, self.stack, records.hooks)
        records.ledger = await ledger(http, self.stack)
        client = self.connect_redis()
        try:
            for stream in OUTCOME_STREAMS:
                published = records.outcomes.setdefault(stream, [])
                for ms, fields in await entries(client, f"rb:{{{stream}}}:stream"):
                    if "group" in fields:
                        continue  # a retry of an entry by one group, not a publication
                    event = _event_of(fields)
                    published.append(
                        Published(str(event.get("id", "")), event.get("data") or {}, ms / 1000)
                    )
            records.dead, records.held = await held_and_dead(client)
        finally:
            await client.aclose()
        return records


def _event_of(fields: dict[str, str]) -> dict[str, Any]:
    with contextlib.suppress(ValueError, KeyError):
        found = json.loads(fields["event"])
        if isinstance(found, dict):
            return found
    return {}


# -- reading Redis and the services ------------------------------------------------------------


async def streams(client: RedisClient) -> list[str]:
    """Logical names of every stream and dead-letter stream in Redis."""
    names: set[str] = set()
    for pattern in ("rb:{*}:stream", "rb:{*}:dlq"):
        async for key in client.scan_iter(match=pattern, count=1000):
            names.add(key[len("rb:{") : key.rindex("}")])
    return sorted(names)


async def entries(client: RedisClient, key: str) -> list[tuple[int, dict[str, str]]]:
    """Every entry of a stream: (ms of its id, fields), in pages of 1,000."""
    found: list[tuple[int, dict[str, str]]] = []
    start = "-"
    for _ in range(10_000):  # pages; 10 million entries is far beyond any run
        page = await client.xrange(key, start, "+", count=1000)
        found += [(int(entry_id.split("-")[0]), fields) for entry_id, fields in page]
        if len(page) < 1000:
            break
        start = f"({page[-1][0]}"
    return found


async def held_and_dead(client: RedisClient) -> tuple[list[StreamItem], list[StreamItem]]:
    """(dead-lettered, still held) events of every stream: held = pending in a group,
    unread by a group, or waiting in the delay store."""
    dead: list[StreamItem] = []
    held: list[StreamItem] = []
    for stream in await streams(client):
        for _, fields in await entries(client, f"rb:{{{stream}}}:dlq"):
            item = item_from_fields(stream, fields.get("group", ""), fields)
            if item is not None:
                dead.append(item)
        key = f"rb:{{{stream}}}:stream"
        groups = await client.xinfo_groups(key) if await client.exists(key) else []
        for group in groups:
            pending = await client.xpending_range(key, group["name"], "-", "+", 100_000)
            ids = [p["message_id"] for p in pending]
            unread = await client.xrange(key, f"({group['last-delivered-id']}", "+", count=100_000)
            for entry_id in ids:
                for _, fields in await client.xrange(key, entry_id, entry_id):
                    item = item_from_fields(stream, group["name"], fields)
                    if item is not None:
                        held.append(item)
            for _, fields in unread:
                if fields.get("group") not in (None, group["name"]):
                    continue  # another group's retry: this group skips it unread
                item = item_from_fields(stream, group["name"], fields)
                if item is not None:
                    held.append(item)
        names = groups_of(groups)
        for member, raw in (await client.hgetall(f"rb:{{{stream}}}:delay:items")).items():
            try:
                held += delay_store_items(stream, member, raw, names)
            except (ValueError, TypeError, KeyError, IndexError) as error:
                print(f"[chaos] unreadable delay item {stream} {member}: {error}", flush=True)
    return dead, held


def groups_of(groups: list[dict[str, Any]]) -> list[str]:
    return [str(g["name"]) for g in groups]


async def outbox_backlog(http: httpx.AsyncClient, base_url: str) -> float:
    """A service's outbox rows committed and not yet appended (the runtime relay's
    ``riverbed_outbox_backlog``; 0 for a service without an outbox)."""
    try:
        text = (await http.get(f"{base_url}/metrics")).text
    except httpx.HTTPError:
        return 1.0  # the service is restarting: not quiet
    total = 0.0
    for line in text.splitlines():
        if line.startswith("riverbed_outbox_backlog"):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def ledger(http: httpx.AsyncClient, stack: Stack) -> list[Booked]:
    """Every ledger transaction of the run's provider, through the payments API."""
    found: list[Booked] = []
    after: str | None = None
    headers = stack.admin_headers("payments")
    for _ in range(1_000):  # pages of 500: far more than any run books
        params: dict[str, str | int] = {"provider": PROVIDER, "limit": 500}
        if after:
            params["after"] = after
        answer = await http.get(
            f"{stack.base_url('payments')}/v1/transactions", params=params, headers=headers
        )
        answer.raise_for_status()
        page = answer.json()
        for t in page["data"]:
            recorded = epoch(t["recorded_at"])
            found.append(Booked(t["kind"], t["provider_ref"], t["id"], recorded))
        after = page.get("next_after")
        if not after:
            break
    return found


def epoch(text: str) -> float:
    """An API's ISO 8601 time in s since the epoch; a time without offset is UTC."""
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


async def delivery_log(
    http: httpx.AsyncClient, stack: Stack, hooks: list[Delivered]
) -> dict[str, list[float]]:
    """For every webhook-id answered 2xx more than once, when the webhooks service logged
    each successful attempt (its API, ``GET /v1/events/{id}/attempts``): a 2xx it never
    logged is one its handler did not finish with."""
    answered = Counter(h.webhook_id for h in hooks if 200 <= h.status < 300)
    found: dict[str, list[float]] = {}
    for webhook_id, count in answered.items():
        if count < 2:
            continue
        try:
            reply = await http.get(
                f"{stack.base_url('webhooks')}/v1/events/{webhook_id}/attempts",
                params={"limit": 1000},
                headers=stack.admin_headers("webhooks"),
            )
            reply.raise_for_status()
            found[webhook_id] = [
                epoch(a["attempted_at"]) for a in reply.json()["data"] if a["succeeded"]
            ]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            print(f"[chaos] no delivery log for {webhook_id}: {error}", flush=True)
    return found


async def register_endpoint(http: httpx.AsyncClient, stack: Stack, url: str) -> str:
    """An endpoint for every payment event, through the webhooks API; its secret."""
    answer = await http.post(
        f"{stack.base_url('webhooks')}/v1/endpoints",
        json={"url": url, "description": "chaos receiver", "event_types": ["payment.*"]},
        headers=stack.admin_headers("webhooks"),
    )
    if answer.status_code != 201:
        raise RuntimeError(f"registering the endpoint: {answer.status_code} {answer.text}")
    secret: str = answer.json()["secret"]
    return secret


# -- the report -----------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis_version = "?"
    binary = shutil.which("redis-server")
    if binary:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
            redis_version = next((p[2:] for p in out.split() if p.startswith("v=")), "?")
    return (
        f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Redis {redis_version}"
    )


def log_errors(log_dir: Path) -> str:
    """Error-level lines of each service's JSON log, by message (the three most frequent)."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        counts: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if '"level": "error"' in line or '"level": "critical"' in line:
                    with contextlib.suppress(ValueError):
                        counts[str(json.loads(line).get("event", "?"))[:80]] += 1
        if counts:
            top = ", ".join(f"{event!r} x{n}" for event, n in counts.most_common(3))
            found.append(f"{path.stem}: {top}")
    return "; ".join(found) or "none"


def code_state() -> str:
    """The commit the services ran from, and which of their paths had uncommitted changes
    (the run uses the working tree)."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            # not strip(): a porcelain line starts with a space when the index is clean
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.rstrip("\n")
        return ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--", "contracts", "riverbed/src", "services")
    dirs = sorted({"/".join(line[3:].split("/")[:2]) for line in changed.splitlines() if line})
    return f"commit {head}" + (f", uncommitted changes in {', '.join(dirs)}" if dirs else "")


def prune_runs() -> None:
    runs = sorted(p for p in RUNS_DIR.iterdir() if p.is_dir()) if RUNS_DIR.is_dir() else []
    for old in runs[:-RUNS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)


async def main_async(plan: Plan, run_dir: Path, holder: dict[str, Stack]) -> int:
    rng = random.Random(20_240_501)  # the same amounts every run
    run = Run(plan, run_dir)
    stack = run.stack
    holder["stack"] = stack
    tasks: list[asyncio.Task[Any]] = []
    started = datetime.now(UTC)
    try:
        await run.smtp.up()
        await run.receiver.start()
        run.say(f"run directory {run_dir.relative_to(ROOT)}; starting Redis and the services")
        stack.start_redis()
        for name in SERVICE_NAMES:
            stack.start_service(name)
        await stack.wait_ready(SERVICE_NAMES, 120.0)
        limits = httpx.Limits(max_connections=POST_CONCURRENCY + 8)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as http:
            run.receiver.secret = await register_endpoint(http, stack, run.receiver.url)
            planned = plan_workload(plan.events, plan.duration_s, rng)
            workload = Workload(http, stack.base_url("gateway"), stack.api_key, run.redis_kills)
            run.t0 = time.time()
            run.say(f"posting {len(planned)} events over {plan.duration_s:g} s")
            tasks = [asyncio.create_task(run.inject(step)) for step in plan.steps]
            tasks.append(asyncio.create_task(run.watchdog()))
            await asyncio.wait_for(workload.run(planned, run.t0), plan.duration_s + 120.0)
            # s: the last fault's outage and restart end well within this
            await asyncio.wait_for(asyncio.gather(*tasks[:-1]), 120.0)
            run.say(f"workload done: {workload.stats.accepted} accepted; waiting for quiet")
            settled, busy = await run.settle(http)
            run.say("settled" if settled else f"NOT settled: {'; '.join(busy[:8])}")
            tasks[-1].cancel()
            records = await run.collect(http, workload)
        document = records_to_json(
            records,
            run.faults,
            t0=run.t0,
            signature_failures=run.receiver.signature_failures,
            settled=settled,
        )
        (run_dir / "records.json").write_text(json.dumps(document))
        results = build_results(records, run.faults)
        outcome = verdict(
            results, signature_failures=run.receiver.signature_failures, settled=settled
        )
        reasons = list(outcome.reasons) + [f"died on its own: {c}" for c in run.crashes]
        report = render_report(plan, started, run, workload, records, results, reasons)
        print(report, flush=True)
        (run_dir / "table.md").write_text(report)
        return 0 if not reasons else 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        run.say("stopping the services, then Redis")
        with contextlib.suppress(Exception):
            await run.receiver.stop()
        await run.smtp.down()
        await asyncio.to_thread(stack.stop_all, 35.0)


def render_report(
    plan: Plan,
    started: datetime,
    run: Run,
    workload: Workload,
    records: Records,
    results: list[RowResult],
    reasons: list[str],
) -> str:
    stats = workload.stats
    hooks = run.receiver.hooks
    faults = "; ".join(
        f"{f.kind} {f.target} at {f.start - run.t0:.0f} s ({f.end - f.start:.1f} s)"
        for f in sorted(run.faults, key=lambda f: f.start)
    )
    dead = Counter(f"{i.stream}/{i.group}" for i in records.dead)
    lines = [
        "",
        f"## Chaos run ({plan.name}), {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}. Code: {run.code}"
        + ("." if run.code == code_state() else f" at the start, {code_state()} at the end."),
        f"Workload: {plan.events} events planned over {plan.duration_s:g} s; "
        f"{stats.posted} posted, {stats.accepted} accepted (202), "
        f"{stats.retried_requests} requests retried, {stats.gave_up} given up, "
        f"refused {dict(stats.refused) or 0}, {stats.skipped_refunds} refunds not posted "
        f"(payment not accepted, or accepted where a Redis kill -9 may lose it); "
        f"gateway answers {dict(sorted(stats.statuses.items()))}.",
        f"Faults: {faults}.",
        f"Receiver: {len(hooks)} requests, {sum(1 for h in hooks if h.status == 500)} answered "
        f"500, {sum(1 for h in hooks if run.receiver.late(h))} answered after the sender's "
        f"{WEBHOOKS_REQUEST_TIMEOUT_S:g} s timeout, "
        f"{run.receiver.signature_failures} signature failures. "
        f"SMTP relay: {len(run.smtp.mails)} messages.",
        f"Dead-letter entries: {dict(dead) or 0}. Error-level log lines: "
        f"{log_errors(run.stack.log_dir)}.",
        f"Settings: {settings_summary()}.",
        "",
        render_table(results),
    ]
    findings = render_findings(results, run.t0)
    if findings:
        lines += ["Lost and doubled, each with its window (t from the start of the workload):", ""]
        lines += [f"    {line}" for line in findings.splitlines()] + [""]
    lines.append("Verdict: " + ("PASS" if not reasons else "FAIL: " + "; ".join(reasons)))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="a few hundred events, fewer faults")
    parser.add_argument("--events", type=int, help="events to post (overrides the plan)")
    parser.add_argument("--duration", type=float, help="seconds to post them over")
    parser.add_argument(
        "--judge",
        type=Path,
        metavar="RUN_DIR",
        help="judge a finished run again from its records.json (no services are started)",
    )
    return parser.parse_args(argv)


def judge_again(run_dir: Path) -> int:
    """The tables of a finished run, from what it recorded (after changing the judge)."""
    document = json.loads((run_dir / "records.json").read_text())
    records, faults = records_from_json(document)
    context = document.get("context", {})
    results = build_results(records, faults)
    print(render_table(results))
    findings = render_findings(results, float(context.get("t0", 0.0)))
    if findings:
        print("Lost and doubled (t from the start of the workload):\n" + findings)
    outcome = verdict(
        results,
        signature_failures=int(context.get("signature_failures", 0)),
        settled=bool(context.get("settled", True)),
    )
    print("Verdict: " + ("PASS" if outcome.ok else "FAIL: " + "; ".join(outcome.reasons)))
    return 0 if outcome.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.judge:
        return judge_again(args.judge)
    plan = SHORT if args.short else FULL
    if args.events or args.duration:
        plan = Plan(
            plan.name,
            args.events or plan.events,
            args.duration or plan.duration_s,
            plan.settle_s,
            plan.steps,
        )
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    prune_runs()
    run_dir = RUNS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{plan.name}"
    run_dir.mkdir()
    holder: dict[str, Stack] = {}
    runner = asyncio.Runner()
    try:
        # SIGTERM as Ctrl-C: the run stops in order (asyncio.Runner cancels the main task
        # on SIGINT; a second SIGINT raises at once and the finally below kills)
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        return runner.run(main_async(plan, run_dir, holder))
    except KeyboardInterrupt:
        print("[chaos] interrupted", flush=True)
        return 130
    finally:
        runner.close()
        if "stack" in holder:
            holder["stack"].kill_all()  # nothing survives the run, whatever happened


if __name__ == "__main__":
    sys.exit(main())
