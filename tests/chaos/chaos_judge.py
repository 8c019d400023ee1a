"""Counting and judging for the chaos suite (``tests/chaos/run.py``): pure functions, no I/O.

The runner records what the gateway accepted (*facts*: one thing that must happen once),
what happened (*effects*: mails by Message-ID, ledger transactions, webhook requests by
``webhook-id``, outcome events by event id), what the streams still hold (dead-lettered,
pending) and when it injected each fault. This module turns that into one row per kind
of fact: accepted, handled once, lost, doubled, dead-lettered, pending; and says which
losses and doubles fall inside a window the README names as accepted
(:data:`ACCEPTED_WINDOWS`, the one place they are listed). Anything else is a defect and
fails the run.

Times are seconds since the Unix epoch (``time.time()``) throughout: Redis entry ids, the
ledger's ``recorded_at`` and the runner's own records all use the wall clock of this one
machine.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

# -- what the runner records -----------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected fault. ``start``: when it was injected; ``end``: when the target was
    back (restarted and ready, answering again, relay listening), s since the epoch."""

    kind: str  # kill9 | sigterm | shutdown | down | error500 | slow
    target: str  # email | webhooks | payments | redis | smtp | receiver
    start: float
    end: float


@dataclass(frozen=True)
class Observed:
    """One observed effect of a fact."""

    at: float  # s since the epoch
    ident: str = ""  # the effect's own id: Message-ID, webhook-id, transaction id, event id
    late: bool = False  # a 2xx the receiver answered after the sender's request timeout
    # whether the service's own log recorded this effect (the webhooks delivery log has a
    # successful attempt for it); None: not known
    recorded: bool | None = None


@dataclass(frozen=True)
class StreamItem:
    """An event a consumer group still holds or gave up on: pending, unread, parked in the
    delay store, or dead-lettered."""

    stream: str  # logical stream, e.g. "email.requested"
    group: str  # the consumer group it belongs to
    event_type: str
    event_id: str
    data: Mapping[str, Any]


# -- the rows of the table ---------------------------------------------------------------

#: row id -> (domain, what one fact of the row is)
ROWS: dict[str, tuple[str, str]] = {
    "email": ("email", "email requests via the gateway -> mail"),
    "receipt": ("email", "receipts (one per ledger payment) -> mail"),
    "email.sent": ("email", "email.sent events per mailed request"),
    "ledger.payment": ("payments", "payment.succeeded via the gateway -> ledger transaction"),
    "ledger.refund": ("payments", "payment.refunded via the gateway -> ledger transaction"),
    "payment.recorded": ("payments", "payment.recorded events per ledger payment"),
    "payment.refund.recorded": ("payments", "payment.refund.recorded events per ledger refund"),
    "hook.source": ("webhooks", "payment events via the gateway -> delivery by webhook-id"),
    "hook.recorded": ("webhooks", "ledger confirmations (*.recorded) -> delivery"),
    "webhook.delivery.succeeded": (
        "webhooks",
        "webhook.delivery.succeeded events per delivered webhook-id",
    ),
}
#: rows that count events on an outcome stream: a copy with the same event id is the
#: designed at-least-once publish (consumers drop it by id), never a double
OUTCOME_ROWS = frozenset(
    {"email.sent", "payment.recorded", "payment.refund.recorded", "webhook.delivery.succeeded"}
)
EMAIL_ROWS = frozenset({"email", "receipt"})
HOOK_ROWS = frozenset({"hook.source", "hook.recorded"})
ALL_ROWS = frozenset(ROWS)


# -- the accepted windows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A loss or double the README names as accepted, with the evidence that places a
    finding inside it.

    A double is explained when, for every repeat, the effect before it lies in
    ``[fault.start - before_s, (fault.end if to_end else fault.start) + after_s]`` of a
    fault of ``kinds`` on one of ``targets`` that started before the repeat (or, for
    ``late_reply``, when that effect was a 2xx answered after the sender's timeout). A
    loss is explained when the fact's time lies in that interval.
    """

    name: str
    readme: tuple[str, str]  # (file, section heading) naming the window
    rows: frozenset[str]
    applies_to: Literal["double", "loss"]
    targets: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    before_s: float = 0.0
    after_s: float = 0.0
    to_end: bool = False
    late_reply: bool = False
    unrecorded: bool = False  # only an effect its service never recorded is explained

    def covers(self, at: float, fault: Fault) -> bool:
        if fault.target not in self.targets or fault.kind not in self.kinds:
            return False
        until = (fault.end if self.to_end else fault.start) + self.after_s
        return fault.start - self.before_s <= at <= until

    def explains_repeat(self, before: Observed, repeat: Observed, faults: Sequence[Fault]) -> bool:
        if self.late_reply:
            return before.late
        if self.unrecorded and before.recorded is not False:
            return False
        return any(self.covers(before.at, f) and f.start <= repeat.at for f in faults)

    def explains_loss(self, at: float, faults: Sequence[Fault]) -> bool:
        return any(self.covers(at, f) for f in faults)


#: s; from the relay's 250 to the email service's sent marker in Redis. The email README
#: measured this window under a burst of 1,000 requests on this 2-core machine: p99 0.25 to
#: 0.7 s, once 1.2 s. A kill -9 within it sends the mail again on redelivery.
EMAIL_RECORD_S = 1.5
#: s; how long before a kill -9 of the webhooks service a 2xx it never recorded in its
#: delivery log may have come: the handler was still running (waiting for SQLite's write
#: lock, or for a loaded event loop) when it died. The delivery log is the evidence; the
#: bound only keeps a kill from explaining what happened long before it.
WEBHOOK_UNRECORDED_S = 30.0
#: s; what a kill -9 of Redis may take back. The README promises "up to about one
#: second" (appendfsync everysec); Redis lets a slow fsync run up to 2 s late, and an
#: outbox event or acknowledgement follows the fact it reports by up to ~1 s here. So an
#: event accepted, or an effect caused, in the 3 s before the kill may be lost or
#: repeated; anything older that is lost or repeated is a defect.
REDIS_CRASH_LOSS_S = 3.0
#: s; a 202 (or an effect) can be seen just after the kill for a write that reached Redis
#: just before it
CLOCK_SLACK_S = 0.5

ACCEPTED_WINDOWS: tuple[Window, ...] = (
    # Email README: "A kill -9 (or a crash) between the relay's 2xx and the marker write.
    # The redelivery finds no marker and sends again"; and "A reply lost after the data was
    # sent" (a kill while the 250 is on its way). The same Message-ID both times. (Redis
    # away when the relay accepts is no window: that README guarantees one send.)
    Window(
        name="email-killed-between-250-and-marker",
        readme=("services/email/README.md", "No double sends, and the window that remains"),
        rows=EMAIL_ROWS,
        applies_to="double",
        targets=frozenset({"email"}),
        kinds=frozenset({"kill9"}),
        before_s=EMAIL_RECORD_S,
        after_s=CLOCK_SLACK_S,
    ),
    # Webhooks README: "A request may be sent twice. A crash … after the receiver answered
    # and before the record commits sends it again on redelivery, with the same
    # webhook-id" — a 2xx before a kill -9 of the webhooks service that its delivery log
    # never recorded (so the handler had not finished when it died).
    Window(
        name="webhooks-killed-before-recording-2xx",
        readme=("services/webhooks/README.md", "Outcome events: the outbox"),
        rows=HOOK_ROWS,
        applies_to="double",
        targets=frozenset({"webhooks"}),
        kinds=frozenset({"kill9"}),
        before_s=WEBHOOK_UNRECORDED_S,
        after_s=CLOCK_SLACK_S,
        unrecorded=True,
    ),
    # Webhooks README: "Only 2xx is success … The whole request has
    # WEBHOOKS_REQUEST_TIMEOUT_S (15 s)", and webhook-id is "the receiver's idempotency key,
    # the same on every attempt": a 2xx that comes after the timeout is a failed attempt
    # to the sender, which delivers again under the same webhook-id.
    Window(
        name="webhook-2xx-after-timeout",
        readme=("services/webhooks/README.md", "What a delivery looks like"),
        rows=HOOK_ROWS,
        applies_to="double",
        late_reply=True,
    ),
    # README, "Where Redis comes from": "AOF with appendfsync everysec (a crash can lose up
    # to about one second of acknowledged writes)": accepted events, and the markers,
    # acknowledgements and idempotency records that stop a repeat.
    Window(
        name="redis-kill-last-seconds",
        readme=("README.md", "Where Redis comes from"),
        rows=ALL_ROWS,
        applies_to="double",
        targets=frozenset({"redis"}),
        kinds=frozenset({"kill9"}),
        before_s=REDIS_CRASH_LOSS_S,
        after_s=CLOCK_SLACK_S,
    ),
    Window(
        name="redis-kill-last-seconds",
        readme=("README.md", "Where Redis comes from"),
        rows=ALL_ROWS,
        applies_to="loss",
        targets=frozenset({"redis"}),
        kinds=frozenset({"kill9"}),
        before_s=REDIS_CRASH_LOSS_S,
        after_s=CLOCK_SLACK_S,
    ),
)
#: Not a window because not a double: an outcome event published again with the *same*
#: event id (email README, "How one request is handled": "Every outcome event has an id
#: derived from the request id"; payments README, "The outbox": "at least once … the
#: copy carries the same id"). Such copies are counted in ``copies``, never in ``doubled``.


# -- judging one row ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A lost or doubled fact, and the accepted window it falls in (None: a defect)."""

    row: str
    key: str
    times: tuple[float, ...]  # the fact's time (lost) or each effect's time (doubled)
    window: str | None
    idents: tuple[str, ...] = ()  # each effect's own id (doubled): one Message-ID or two?


@dataclass
class RowResult:
    row: str
    accepted: int = 0
    once: int = 0
    dead_lettered: int = 0
    pending: int = 0
    unexpected: int = 0  # effects of nothing accepted (e.g. a request the client gave up on)
    copies: int = 0  # outcome rows: the same event id appended again
    lost: list[Finding] = field(default_factory=list)
    doubled: list[Finding] = field(default_factory=list)

    @property
    def defects(self) -> list[Finding]:
        return [f for f in (*self.lost, *self.doubled) if f.window is None]


def explain_double(
    row: str,
    effects: Sequence[Observed],
    faults: Sequence[Fault],
    windows: Sequence[Window] = ACCEPTED_WINDOWS,
) -> str | None:
    """The windows explaining every repeat of ``effects`` (in time order), or None if any
    repeat is not explained."""
    ordered = sorted(effects, key=lambda e: e.at)
    names: list[str] = []
    for before, repeat in itertools.pairwise(ordered):
        found = next(
            (
                w.name
                for w in windows
                if w.applies_to == "double"
                and row in w.rows
                and w.explains_repeat(before, repeat, faults)
            ),
            None,
        )
        if found is None:
            return None
        if found not in names:
            names.append(found)
    return "+".join(names)


def explain_loss(
    row: str, at: float, faults: Sequence[Fault], windows: Sequence[Window] = ACCEPTED_WINDOWS
) -> str | None:
    return next(
        (
            w.name
            for w in windows
            if w.applies_to == "loss" and row in w.rows and w.explains_loss(at, faults)
        ),
        None,
    )


def judge_row(
    row: str,
    facts: Mapping[str, float],
    effects: Mapping[str, Sequence[Observed]],
    *,
    dead: Iterable[str] = (),
    pending: Iterable[str] = (),
    faults: Sequence[Fault] = (),
    copies: int = 0,
    windows: Sequence[Window] = ACCEPTED_WINDOWS,
) -> RowResult:
    """Classify every fact of a row: once, doubled, dead-lettered, pending or lost.

    ``facts``: key -> when it was accepted (or, for facts that follow from an effect, when
    that effect happened). ``effects``: key -> what was observed for it. A fact with an
    effect is judged by its effects even if it was also dead-lettered or is pending.
    """
    dead_keys, pending_keys = set(dead), set(pending)
    result = RowResult(row, accepted=len(facts), copies=copies)
    for key, at in sorted(facts.items(), key=lambda item: item[1]):
        seen = effects.get(key, ())
        if len(seen) == 1:
            result.once += 1
        elif len(seen) > 1:
            ordered = sorted(seen, key=lambda e: e.at)
            result.doubled.append(
                Finding(
                    row,
                    key,
                    tuple(e.at for e in ordered),
                    explain_double(row, ordered, faults, windows),
                    tuple(e.ident for e in ordered),
                )
            )
        elif key in dead_keys:
            result.dead_lettered += 1
        elif key in pending_keys:
            result.pending += 1
        else:
            result.lost.append(Finding(row, key, (at,), explain_loss(row, at, faults, windows)))
    result.unexpected = sum(1 for key in effects if key not in facts)
    return result


# -- turning records into effects ------------------------------------------------------------


def group_effects(pairs: Iterable[tuple[str, Observed]]) -> dict[str, list[Observed]]:
    """key -> its effects, in time order."""
    grouped: dict[str, list[Observed]] = defaultdict(list)
    for key, observed in pairs:
        grouped[key].append(observed)
    return {key: sorted(found, key=lambda e: e.at) for key, found in grouped.items()}


def outcome_effects(
    entries: Iterable[tuple[str, str, float]],
) -> tuple[dict[str, list[Observed]], int]:
    """Events on an outcome stream as effects of the facts they report.

    ``entries``: (fact key, event id, entry time) for every original entry (retries, which
    carry a ``group`` field, left out by the caller). Returns fact key -> one Observed per
    *distinct* event id (its first entry), and how many entries were copies of an id
    already seen.
    """
    first: dict[tuple[str, str], float] = {}
    copies = 0
    for key, event_id, at in entries:
        seen = first.get((key, event_id))
        if seen is None:
            first[(key, event_id)] = at
        else:
            copies += 1
            first[(key, event_id)] = min(seen, at)
    effects = group_effects(
        (key, Observed(at, ident=event_id)) for (key, event_id), at in first.items()
    )
    return effects, copies


def message_id_local_part(message_id: str) -> str:
    """``<event-id@domain>`` -> ``event-id`` (the email README: Message-ID is the event id)."""
    return message_id.strip().strip("<>").rpartition("@")[0]


#: event types a webhook delivers that the gateway accepted (keyed by event id) and that the
#: ledger reports (keyed by the provider's id)
SOURCE_TYPES = frozenset({"payment.succeeded.v1", "payment.refunded.v1"})


def hook_key(event_type: str, event_id: str, data: Mapping[str, Any]) -> tuple[str, str] | None:
    """(row, key) of the fact a webhook with this body delivers, None for other events."""
    if event_type in SOURCE_TYPES:
        return "hook.source", event_id
    if event_type == "payment.recorded.v1":
        return "hook.recorded", f"recorded:{data.get('provider_payment_id')}"
    if event_type == "payment.refund.recorded.v1":
        return "hook.recorded", f"refund-recorded:{data.get('provider_refund_id')}"
    return None


def in_flight_keys(items: Iterable[StreamItem]) -> dict[str, set[str]]:
    """row -> fact keys of events a consumer group still holds (or dead-lettered).

    Which fact an event stands for depends on the group: on ``payment.succeeded`` the
    ``payments`` group makes the ledger transaction, the ``webhooks`` group the delivery.
    """
    found: dict[str, set[str]] = defaultdict(set)
    for item in items:
        data = item.data
        if item.stream == "email.requested" and item.group == "email":
            # one recipient per request in the workload: the address names the request
            if isinstance(data.get("to"), str):
                found["email"].add(data["to"].lower())
                found["receipt"].add(data["to"].lower())
        elif item.stream == "payment.succeeded" and item.group == "payments":
            found["ledger.payment"].add(str(data.get("provider_payment_id")))
        elif item.stream == "payment.refunded" and item.group == "payments":
            found["ledger.refund"].add(str(data.get("provider_refund_id")))
        elif item.stream == "webhook.delivery.requested":
            event = data.get("event")
            if isinstance(event, Mapping):
                hooked = hook_key(
                    str(event.get("type")), str(event.get("id")), event.get("data") or {}
                )
                if hooked is not None:
                    found[hooked[0]].add(hooked[1])
        elif item.group == "webhooks":
            hooked = hook_key(item.event_type, item.event_id, data)
            if hooked is not None:
                found[hooked[0]].add(hooked[1])
    return dict(found)


def item_from_fields(stream: str, group: str, fields: Mapping[str, str]) -> StreamItem | None:
    """A StreamItem from a stream entry's (or a delay item's) fields; None without an event.

    A retry entry names the one group that handles it (``group`` field); ``group`` is
    the group the caller found it under.
    """
    raw = fields.get("event")
    if raw is None:
        return None
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    return StreamItem(
        stream=stream,
        group=fields.get("group") or group,
        event_type=str(event.get("type", "")),
        event_id=str(event.get("id", "")),
        data=data if isinstance(data, dict) else {},
    )


def delay_store_items(
    stream: str, member: str, raw: str, groups: Sequence[str]
) -> list[StreamItem]:
    """The events one delay-store item stands for. The member names its group (keys.py:
    ``retry:<group>:<entry id>`` for one group's retry or deferral, ``event:<id>`` for an
    event published for later, which every group gets); the item is the event's JSON
    (or, in an older layout, ``{"fields": [name, value, …]}`` of the entry to append)."""
    document = json.loads(raw)
    if isinstance(document, dict) and isinstance(document.get("fields"), list):
        flat = document["fields"]
        fields = {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=False)}
    else:
        fields = {"event": raw}
    owners = [member.split(":")[1]] if member.startswith("retry:") else list(groups)
    found = (item_from_fields(stream, group, fields) for group in owners)
    return [item for item in found if item is not None]


# -- every row from the run's records ------------------------------------------------------


@dataclass(frozen=True)
class Mailed:
    message_id: str
    to: str
    at: float


@dataclass(frozen=True)
class Booked:
    """A ledger transaction, as the payments API lists it."""

    kind: str  # payment | refund | …
    provider_ref: str  # the payment's or the refund's id at the provider
    transaction_id: str
    recorded_at: float


@dataclass(frozen=True)
class Published:
    """An original entry of an outcome stream (not a retry of it)."""

    event_id: str
    data: Mapping[str, Any]
    at: float  # the entry id's time


@dataclass(frozen=True)
class Delivered:
    """A webhook request the receiver answered."""

    webhook_id: str
    event_type: str
    data: Mapping[str, Any]
    status: int
    arrived: float  # s since the epoch: when the request came (the attempt's order)
    answered: float  # s since the epoch
    late: bool  # answered after the sender's request timeout


@dataclass
class Records:
    """What one chaos run accepted and observed. Keys: an email is named by its recipient
    (one per request in the workload), a payment or refund by its id at the provider, a
    payment event's webhook by the event id (its ``webhook-id``)."""

    emails: dict[str, float] = field(default_factory=dict)  # recipient -> accepted at
    payments: dict[str, float] = field(default_factory=dict)  # payment id -> accepted at
    refunds: dict[str, float] = field(default_factory=dict)  # refund id -> accepted at
    source_events: dict[str, float] = field(default_factory=dict)  # event id -> accepted at
    receipt_address: dict[str, str] = field(default_factory=dict)  # payment id -> address
    mails: list[Mailed] = field(default_factory=list)
    ledger: list[Booked] = field(default_factory=list)
    outcomes: dict[str, list[Published]] = field(default_factory=dict)  # by logical stream
    hooks: list[Delivered] = field(default_factory=list)
    # webhook-id -> when the webhooks service logged each successful attempt (its
    # delivery log), for the webhook-ids answered 2xx more than once
    delivery_log: dict[str, list[float]] = field(default_factory=dict)
    dead: list[StreamItem] = field(default_factory=list)
    held: list[StreamItem] = field(default_factory=list)


def build_results(records: Records, faults: Sequence[Fault]) -> list[RowResult]:
    """Every row of the table, judged."""
    dead, held = in_flight_keys(records.dead), in_flight_keys(records.held)

    def row(
        name: str,
        facts: Mapping[str, float],
        effects: Mapping[str, Sequence[Observed]],
        copies: int = 0,
    ) -> RowResult:
        return judge_row(
            name,
            facts,
            effects,
            dead=dead.get(name, ()),
            pending=held.get(name, ()),
            faults=faults,
            copies=copies,
        )

    mails = group_effects((m.to.lower(), Observed(m.at, ident=m.message_id)) for m in records.mails)
    booked: dict[str, dict[str, list[Observed]]] = defaultdict(dict)
    for kind in ("payment", "refund"):
        booked[kind] = group_effects(
            (b.provider_ref, Observed(b.recorded_at, ident=b.transaction_id))
            for b in records.ledger
            if b.kind == kind
        )
    ledger_payments = {ref: seen[0].at for ref, seen in booked["payment"].items()}
    ledger_refunds = {ref: seen[0].at for ref, seen in booked["refund"].items()}
    receipts = {
        records.receipt_address[ref].lower(): at
        for ref, at in ledger_payments.items()
        if ref in records.receipt_address
    }
    emails = {to.lower(): at for to, at in records.emails.items()}

    def outcomes(stream: str, key_field: str) -> tuple[dict[str, list[Observed]], int]:
        return outcome_effects(
            (str(p.data.get(key_field, "")).lower() if key_field == "to" else
             str(p.data.get(key_field, "")), p.event_id, p.at)
            for p in records.outcomes.get(stream, ())
        )  # fmt: skip

    # a receipt address is a receipt's; any other mail belongs to the gateway's requests
    # (a request the client gave up on whose event was published anyway is "unexpected")
    receipt_addresses = {a.lower() for a in records.receipt_address.values()}
    results = [
        row("email", emails, {k: v for k, v in mails.items() if k not in receipt_addresses}),
        row("receipt", receipts, {k: v for k, v in mails.items() if k in receipt_addresses}),
    ]
    sent, sent_copies = outcomes("email.sent", "to")
    mailed = {to: seen[0].at for to, seen in mails.items() if to in emails or to in receipts}
    results.append(row("email.sent", mailed, sent, sent_copies))

    results.append(row("ledger.payment", records.payments, booked["payment"]))
    results.append(row("ledger.refund", records.refunds, booked["refund"]))
    recorded, recorded_copies = outcomes("payment.recorded", "provider_payment_id")
    results.append(row("payment.recorded", ledger_payments, recorded, recorded_copies))
    refunded, refunded_copies = outcomes("payment.refund.recorded", "provider_refund_id")
    results.append(row("payment.refund.recorded", ledger_refunds, refunded, refunded_copies))

    by_row: dict[str, list[tuple[str, Observed]]] = defaultdict(list)
    first_prompt: dict[str, float] = {}
    logged = hooks_recorded(records)
    for index, hook in enumerate(records.hooks):
        if not 200 <= hook.status < 300:
            continue
        if not hook.late:
            at = first_prompt.get(hook.webhook_id, hook.answered)
            first_prompt[hook.webhook_id] = min(at, hook.answered)
        found = hook_key(hook.event_type, hook.webhook_id, hook.data)
        if found is not None:
            # in the order the attempts were made: a 2xx that comes after the timeout may
            # be answered after the retry it caused
            observed = Observed(
                hook.arrived, ident=hook.webhook_id, late=hook.late, recorded=logged.get(index)
            )
            by_row[found[0]].append((found[1], observed))
    confirmations = {f"recorded:{ref}": at for ref, at in ledger_payments.items()} | {
        f"refund-recorded:{ref}": at for ref, at in ledger_refunds.items()
    }
    results.append(row("hook.source", records.source_events, group_effects(by_row["hook.source"])))
    results.append(row("hook.recorded", confirmations, group_effects(by_row["hook.recorded"])))
    succeeded, succeeded_copies = outcomes("webhook.delivery.succeeded", "event_id")
    results.append(row("webhook.delivery.succeeded", first_prompt, succeeded, succeeded_copies))
    return results


def match_recorded(answered: Sequence[float], logged: Sequence[float]) -> list[bool]:
    """Which of a webhook-id's 2xx answers (times the receiver answered) the delivery log
    recorded as successful attempts (times it logged them). Each log entry accounts for
    one answer, the closest in time among those given at most 30 s before it (a loaded
    event loop logs late) and at most 2 s after it (the receiver's own clock reading lags
    as well)."""
    pairs = sorted(
        (abs(log - answer), a, g)
        for a, answer in enumerate(answered)
        for g, log in enumerate(logged)
        if log - 30.0 <= answer <= log + 2.0
    )
    matched: set[int] = set()
    used: set[int] = set()
    for _, a, g in pairs:
        if a not in matched and g not in used:
            matched.add(a)
            used.add(g)
    return [a in matched for a in range(len(answered))]


def hooks_recorded(records: Records) -> dict[int, bool]:
    """Index in ``records.hooks`` -> whether the delivery log recorded that 2xx, for the
    webhook-ids whose log was read."""
    answered: dict[str, list[int]] = defaultdict(list)
    for index, hook in enumerate(records.hooks):
        if 200 <= hook.status < 300 and hook.webhook_id in records.delivery_log:
            answered[hook.webhook_id].append(index)
    found: dict[int, bool] = {}
    for webhook_id, indexes in answered.items():
        times = [records.hooks[i].answered for i in indexes]
        flags = match_recorded(times, records.delivery_log[webhook_id])
        found.update(zip(indexes, flags, strict=True))
    return found


def records_to_json(
    records: Records, faults: Sequence[Fault], **context: float | bool | int
) -> dict[str, Any]:
    """What a run recorded, as JSON (kept in the run's directory so it can be judged again:
    ``run.py --judge DIR``); ``context``: the run's start, signature failures, settled."""
    return {
        "records": asdict(records),
        "faults": [asdict(f) for f in faults],
        "context": context,
    }


def _known(kind: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without keys ``kind`` has no field for (records of an older layout)."""
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in values.items() if k in names}


def records_from_json(document: Mapping[str, Any]) -> tuple[Records, list[Fault]]:
    raw = document["records"]
    records = Records(
        emails=dict(raw["emails"]),
        payments=dict(raw["payments"]),
        refunds=dict(raw["refunds"]),
        source_events=dict(raw["source_events"]),
        receipt_address=dict(raw["receipt_address"]),
        mails=[Mailed(**m) for m in raw["mails"]],
        ledger=[Booked(**b) for b in raw["ledger"]],
        outcomes={s: [Published(**p) for p in found] for s, found in raw["outcomes"].items()},
        hooks=[Delivered(**_known(Delivered, h)) for h in raw["hooks"]],
        delivery_log={k: list(v) for k, v in raw.get("delivery_log", {}).items()},
        dead=[StreamItem(**i) for i in raw["dead"]],
        held=[StreamItem(**i) for i in raw["held"]],
    )
    return records, [Fault(**f) for f in document["faults"]]


# -- the verdict and the table -----------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...]


def verdict(results: Sequence[RowResult], *, signature_failures: int, settled: bool) -> Verdict:
    """Fail on any loss or double outside an accepted window, on any webhook whose
    signature did not verify, and when the stack did not settle (what it still held
    could not be judged)."""
    reasons: list[str] = []
    for result in results:
        lost = [f for f in result.lost if f.window is None]
        doubled = [f for f in result.doubled if f.window is None]
        if lost:
            reasons.append(f"{result.row}: {len(lost)} lost outside any accepted window")
        if doubled:
            reasons.append(f"{result.row}: {len(doubled)} doubled outside any accepted window")
    if signature_failures:
        reasons.append(f"{signature_failures} webhook requests failed signature verification")
    if not settled:
        reasons.append("the stack did not settle within the wait: pending work was left")
    return Verdict(not reasons, tuple(reasons))


def _count(findings: Sequence[Finding]) -> str:
    accepted = sum(1 for f in findings if f.window is not None)
    if not findings:
        return "0"
    if accepted == len(findings):
        return f"{len(findings)} (all in a window)"
    if accepted:
        return f"{len(findings)} ({accepted} in a window)"
    return f"**{len(findings)}**"


def render_table(results: Sequence[RowResult]) -> str:
    """A Markdown table per domain, in the order of :data:`ROWS`."""
    by_row = {r.row: r for r in results}
    lines: list[str] = []
    domains = list(dict.fromkeys(domain for domain, _ in ROWS.values()))
    for domain in domains:
        rows = [row for row, (d, _) in ROWS.items() if d == domain and row in by_row]
        if not rows:
            continue
        lines += [
            f"**{domain}**",
            "",
            "| what must happen once | accepted | handled once | lost | doubled "
            "| dead-lettered | pending |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows:
            r = by_row[row]
            lines.append(
                f"| {ROWS[row][1]} | {r.accepted} | {r.once} | {_count(r.lost)} "
                f"| {_count(r.doubled)} | {r.dead_lettered} | {r.pending} |"
            )
        notes = [
            f"{row}: {by_row[row].copies} copies of an id already published (by design)"
            for row in rows
            if by_row[row].copies
        ] + [
            f"{row}: {by_row[row].unexpected} effects of nothing accepted"
            for row in rows
            if by_row[row].unexpected
        ]
        if notes:
            lines += ["", *[f"- {note}" for note in notes]]
        lines.append("")
    return "\n".join(lines)


def render_findings(results: Sequence[RowResult], t0: float, limit: int = 10) -> str:
    """Each lost or doubled fact (up to ``limit`` per row and kind, defects first), times
    in s from ``t0``."""
    lines: list[str] = []
    for result in results:
        for kind, found in (("lost", result.lost), ("doubled", result.doubled)):
            findings = sorted(found, key=lambda f: f.window is not None)  # defects first
            for finding in findings[:limit]:
                times = ", ".join(f"{t - t0:.1f}" for t in finding.times)
                why = finding.window or "DEFECT: no accepted window"
                ids = f" ({', '.join(dict.fromkeys(finding.idents))})" if finding.idents else ""
                lines.append(f"{result.row} {kind} {finding.key}{ids} at t={times} s: {why}")
            if len(findings) > limit:
                lines.append(f"{result.row} {kind}: {len(findings) - limit} more")
    return "\n".join(lines)
