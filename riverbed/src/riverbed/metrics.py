"""Every Prometheus metric of the runtime, defined once.

Units are in the names (``_seconds``, ``_bytes``). Label values are bounded:
streams, groups and event types come from the contracts registry, never from
user input.
"""

from __future__ import annotations

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


IN_FLIGHT = Gauge("riverbed_in_flight", "Entries being handled now", ["stream", "group"])
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
