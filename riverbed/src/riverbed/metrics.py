"""Every Prometheus metric of the runtime, defined once.

Units are in the names (``_seconds``, ``_bytes``). Label values are bounded:
streams, groups and event types come from the contracts registry, never from
user input.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# -- cache -----------------------------------------------------------------
CACHE_HITS = Counter(
    "riverbed_cache_hits_total", "Cache lookups answered from Redis", ["namespace"]
)
CACHE_MISSES = Counter(
    "riverbed_cache_misses_total", "Cache lookups that had to load", ["namespace"]
)
CACHE_LOAD_SECONDS = Histogram(
    "riverbed_cache_load_seconds", "Time spent in cache loaders on a miss", ["namespace"]
)
# operation: lookup | fill | decode | set | delete | invalidate (bounded by riverbed.cache)
CACHE_ERRORS = Counter(
    "riverbed_cache_errors_total",
    "Cache operations that failed (Redis error or undecodable entry)",
    ["namespace", "operation"],
)

# -- publishing ------------------------------------------------------------
PUBLISHED = Counter("riverbed_published_total", "Events appended to streams", ["stream", "type"])
PUBLISH_SECONDS = Histogram(
    "riverbed_publish_seconds",
    "Time to append one event or one pipelined batch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

DELAYED_PUBLISHED = Counter(
    "riverbed_delayed_published_total",
    "Events published for later: kept in their stream's delay store until due",
    ["stream", "type"],
)

# -- consuming -------------------------------------------------------------
_MESSAGE = ["stream", "group", "type"]
CONSUMED = Counter("riverbed_consumed_total", "Entries handed to a handler", _MESSAGE)
ACKNOWLEDGED = Counter(
    "riverbed_acknowledged_total", "Entries acknowledged after success", _MESSAGE
)
FAILED = Counter("riverbed_failed_total", "Entries whose handling failed", _MESSAGE)
RETRIED = Counter("riverbed_retried_total", "Entries scheduled for a retry", _MESSAGE)
DEAD_LETTERED = Counter(
    "riverbed_dead_lettered_total", "Entries moved to the dead-letter stream", [*_MESSAGE, "reason"]
)
HANDLER_SECONDS = Histogram(
    "riverbed_handler_seconds",
    "Handler run time per entry",
    _MESSAGE,
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True)
class MessageMetrics:
    """The per-message series of one (stream, group, type), looked up once, not per message."""

    consumed: Any
    acknowledged: Any
    handler_seconds: Any

    @classmethod
    def of(cls, stream: str, group: str, event_type: str) -> MessageMetrics:
        labels = (stream, group, event_type)
        return cls(
            CONSUMED.labels(*labels), ACKNOWLEDGED.labels(*labels), HANDLER_SECONDS.labels(*labels)
        )


def observe_all(histogram: Any, amounts: Sequence[float]) -> None:
    """Observe every one of ``amounts`` in ``histogram`` (a labelled child), as many
    ``observe()`` calls would, but taking each bucket's lock once per call rather than once
    per value: an ``observe()`` is ~1 µs, a sizeable share of a no-op handler's path.

    It reaches into prometheus_client's child (bucket bounds and values, as of 0.2x); should
    a release rename them, it falls back to ``observe()`` one by one.
    ``riverbed/tests/test_metrics.py`` holds the two to the same exposition."""
    try:
        bounds: list[float] = histogram._upper_bounds
        buckets = histogram._buckets
        total = histogram._sum
    except AttributeError:
        for amount in amounts:
            histogram.observe(amount)
        return
    if not amounts:
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        # observe() puts a value in the first bucket whose bound is >= it (le semantics)
        counts[bisect_left(bounds, amount)] += 1
    total.inc(sum(amounts))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


IN_FLIGHT = Gauge(
    "riverbed_in_flight",
    "Entries in hand: being handled, or read and waiting for a handler slot",
    ["stream", "group"],
)
DUPLICATES_SKIPPED = Counter(
    "riverbed_duplicates_skipped_total",
    "Redelivered entries whose event id this group already handled",
    ["stream", "group"],
)
RECLAIMED = Counter(
    "riverbed_reclaimed_total",
    "Entries claimed after idling past the visibility timeout",
    ["stream", "group"],
)
TAKEN_OVER = Counter(
    "riverbed_taken_over_total",
    "Entries claimed from a consumer whose heartbeat stopped (before its visibility timeout)",
    ["stream", "group"],
)
DELETED_WHILE_PENDING = Counter(
    "riverbed_deleted_while_pending_total",
    "Pending entries found trimmed from the stream before they were handled",
    ["stream", "group"],
)
GROUP_RECREATED = Counter(
    "riverbed_group_recreated_total", "Consumer groups recreated after NOGROUP", ["stream", "group"]
)
CONSUMERS_REMOVED = Counter(
    "riverbed_consumers_removed_total",
    "Idle consumers with nothing pending removed",
    ["stream", "group"],
)
REDIS_ERRORS = Counter(
    "riverbed_redis_errors_total",
    "Redis calls of the consumer that failed",
    ["stream", "group", "call"],
)

HANDLER_TIMEOUTS = Counter(
    "riverbed_handler_timeouts_total",
    "Handlers cancelled for running past their subscription's timeout (a failed delivery)",
    _MESSAGE,
)
HANDLERS_SLOW = Gauge(
    "riverbed_handlers_slow",
    "Handlers running now for longer than half their timeout",
    ["stream", "group"],
)

# -- the delay store (riverbed.delay) ------------------------------------------
PROMOTED = Counter(
    "riverbed_promoted_total", "Due items moved from the delay store onto their stream", ["stream"]
)
PROMOTION_DELAY = Histogram(
    "riverbed_promotion_delay_seconds",
    "Time from an item's due time to its promotion (the oldest of each promoted batch)",
    ["stream"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# -- streams and Redis, sampled by riverbed.monitor -------------------------
STREAM_LENGTH = Gauge("riverbed_stream_length", "Entries in the stream (XLEN)", ["stream"])
GROUP_LAG = Gauge(
    "riverbed_group_lag",
    "Entries not yet delivered to the group; absent when Redis cannot tell",
    ["stream", "group"],
)
GROUP_PENDING = Gauge(
    "riverbed_group_pending", "Entries delivered, not acknowledged", ["stream", "group"]
)
OLDEST_PENDING_AGE = Gauge(
    "riverbed_oldest_pending_age_seconds",
    "Age of the oldest unacknowledged entry (from its id's timestamp); 0 when none pending",
    ["stream", "group"],
)
DEAD_LETTER_DEPTH = Gauge(
    "riverbed_dead_letter_depth", "Entries in the dead-letter stream", ["stream"]
)
DELAYED_WAITING = Gauge(
    "riverbed_delayed_waiting",
    "Items in the stream's delay store: retries, deferrals and events published for later",
    ["stream"],
)
DELAYED_DUE = Gauge(
    "riverbed_delayed_due",
    "Items in the delay store whose time has come but that are not promoted yet",
    ["stream"],
)
PROMOTION_LAG = Gauge(
    "riverbed_promotion_lag_seconds",
    "How long the oldest due item of the delay store has waited past its due time; 0 if none",
    ["stream"],
)
REDIS_USED_MEMORY = Gauge("riverbed_redis_used_memory_bytes", "Redis used_memory")
REDIS_MAX_MEMORY = Gauge("riverbed_redis_maxmemory_bytes", "Redis maxmemory (0 = no limit)")
RETENTION_TRIMMED = Counter(
    "riverbed_retention_trimmed_total",
    "Entries trimmed by retention: acknowledged by every group, or (streams no group reads, "
    "and dead letters as <stream>:dlq) past their age",
    ["stream"],
)

# -- Redis health (riverbed.redis_health, riverbed.redis_timing) -----------------------
# Sampled by every service on RIVERBED_REDIS_PROBE_INTERVAL_S (5 s), per Redis node: "node"
# is host:port (or the socket path) of a node the client reaches, bounded by the
# deployment's nodes. Redis's own running counts (evicted keys…) are gauges that mirror
# INFO: use rate()/increase() on them; they restart from 0 when Redis restarts.
_REDIS_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip
REDIS_PING_SECONDS = Histogram(
    "riverbed_redis_ping_seconds",
    "Round trip of the health probe's PING to a Redis node (answered probes only)",
    ["node"],
    buckets=_REDIS_SECONDS_BUCKETS,
)
REDIS_UP = Gauge(
    "riverbed_redis_up", "1 when the last health probe's PING to the node was answered, else 0",
    ["node"],
)  # fmt: skip
# family: stream-read | stream-read-blocking (XREAD[GROUP] BLOCK: includes the wait) |
# stream-write | script | key | server | pipeline (one batch's round trip)
REDIS_COMMAND_SECONDS = Histogram(
    "riverbed_redis_command_seconds",
    "Time of the runtime's own Redis calls, by command family (retries included)",
    ["family"],
    buckets=_REDIS_SECONDS_BUCKETS,
)
REDIS_EVICTED_KEYS = Gauge(
    "riverbed_redis_evicted_keys", "Keys evicted for maxmemory since Redis started (INFO)",
    ["node"],
)  # fmt: skip
REDIS_EXPIRED_KEYS = Gauge(
    "riverbed_redis_expired_keys", "Keys expired (TTL) since Redis started (INFO)", ["node"]
)
REDIS_REJECTED_CONNECTIONS = Gauge(
    "riverbed_redis_rejected_connections",
    "Connections refused for maxclients since Redis started (INFO)",
    ["node"],
)
REDIS_CONNECTED_CLIENTS = Gauge(
    "riverbed_redis_connected_clients", "Client connections open now (INFO)", ["node"]
)
REDIS_BLOCKED_CLIENTS = Gauge(
    "riverbed_redis_blocked_clients",
    "Clients waiting in a blocking call now, e.g. XREADGROUP BLOCK (INFO)",
    ["node"],
)
REDIS_FRAGMENTATION_RATIO = Gauge(
    "riverbed_redis_mem_fragmentation_ratio",
    "Memory the OS gave Redis over what it uses (INFO mem_fragmentation_ratio; >1.5: wasteful)",
    ["node"],
)
REDIS_NODE_USED_MEMORY = Gauge(
    "riverbed_redis_node_used_memory_bytes", "used_memory of the node (INFO)", ["node"]
)
REDIS_NODE_MAX_MEMORY = Gauge(
    "riverbed_redis_node_maxmemory_bytes", "maxmemory of the node, 0 = no limit (INFO)", ["node"]
)
REDIS_AOF_ENABLED = Gauge(
    "riverbed_redis_aof_enabled", "1 when the node writes an append-only file (INFO)", ["node"]
)
REDIS_AOF_LAST_WRITE_OK = Gauge(
    "riverbed_redis_aof_last_write_ok",
    "0 when the node's last AOF write failed (aof_last_write_status:err; writes are refused)",
    ["node"],
)
REDIS_RDB_LAST_BGSAVE_OK = Gauge(
    "riverbed_redis_rdb_last_bgsave_ok",
    "0 when the node's last RDB snapshot failed (rdb_last_bgsave_status:err)",
    ["node"],
)
REDIS_AOF_DELAYED_FSYNC = Gauge(
    "riverbed_redis_aof_delayed_fsync",
    "Times the node's AOF fsync fell behind (the disk is slow) since Redis started (INFO)",
    ["node"],
)
REDIS_IS_PRIMARY = Gauge(
    "riverbed_redis_is_primary", "1 when the node is a primary, 0 when a replica (INFO)", ["node"]
)
REDIS_CONNECTED_REPLICAS = Gauge(
    "riverbed_redis_connected_replicas", "Replicas connected to the node (INFO)", ["node"]
)
REDIS_PRIMARY_LINK_UP = Gauge(
    "riverbed_redis_primary_link_up",
    "On a replica: 1 when its link to the primary is up (master_link_status); absent on a primary",
    ["node"],
)
REDIS_SLOWLOG_LENGTH = Gauge(
    "riverbed_redis_slowlog_length",
    "Entries in the node's slow log (SLOWLOG LEN); absent where the command is refused",
    ["node"],
)
# event: Redis's latency-monitor event names (command, fast-command, fork, aof-write…)
REDIS_LATENCY_LATEST = Gauge(
    "riverbed_redis_latency_latest_seconds",
    "Duration of the latest spike of each latency-monitor event (LATENCY LATEST)",
    ["node", "event"],
)
REDIS_LATENCY_LATEST_TIME = Gauge(
    "riverbed_redis_latency_latest_timestamp_seconds",
    "When the latest spike of each latency-monitor event happened, unix seconds",
    ["node", "event"],
)

# -- schedules ---------------------------------------------------------------
# Labelled by schedule name: names are chosen by operators, bounded by the number of
# schedules (tens, not per-event values); a removed schedule's series go with it.
SCHEDULES = Gauge("riverbed_schedules", "Recurring schedules defined (entries in the index)")
SCHEDULE_LAST_FIRE = Gauge(
    "riverbed_schedule_last_fire_timestamp_seconds",
    "Occurrence time of the last event a schedule published, unix seconds",
    ["schedule"],
)
SCHEDULE_NEXT_FIRE = Gauge(
    "riverbed_schedule_next_fire_timestamp_seconds",
    "Next occurrence a schedule waits for, unix seconds; absent when paused or finished",
    ["schedule"],
)
SCHEDULE_OCCURRENCES_FIRED = Counter(
    "riverbed_schedule_occurrences_fired_total",
    "Occurrences this process published (each is published by one replica only)",
    ["schedule"],
)
SCHEDULE_MISFIRES_SKIPPED = Counter(
    "riverbed_schedule_misfires_skipped_total",
    "Due occurrences skipped after downtime: only the most recent missed one is published",
    ["schedule"],
)


def acknowledged_total() -> int:
    """Entries this process acknowledged since it started, over every stream and group."""
    return sum(
        int(sample.value)
        for metric in ACKNOWLEDGED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
