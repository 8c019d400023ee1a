"""The reliable consumer: one consumer-group member on one stream.

The hot path reads batches (``XREADGROUP COUNT/BLOCK``) and gives every entry
its own outcome; handlers run concurrently up to a bound, and outcomes are
applied to Redis together (one script call acknowledges every success of a
flush). What each row of docs/delivery.md's table becomes here:

- a failed (or deferred) delivery is parked in the stream's delay store and
  acknowledged in one script; a promoter appends it again when due, as a new entry
  carrying its attempt number and meant for this group only (``riverbed.delay``), so a
  retry never blocks the stream and never pins it in the pending list;
- the attempt is the carried attempt plus the redeliveries of this entry; past
  ``max_deliveries`` (or at once for a permanent error) an entry is copied to the
  dead-letter stream and acknowledged in one script;
- a handler that runs past its timeout is cancelled: a failed delivery, reason ``timeout``;
- held entries are kept alive with ``XCLAIM … JUSTID`` so the visibility timeout
  measures liveness, not handler time; entries idle past it are reclaimed;
- every consumer beats a heartbeat each second; a sibling takes over the entries of a
  consumer whose heartbeat stopped within seconds, not a whole visibility timeout;
- on start the consumer re-reads its own pending entries first;
- entries trimmed while pending are dropped from the pending list and counted;
- ``NOGROUP`` (Redis restarted or flushed) recreates the group, with backoff;
- idle consumers with nothing pending are removed from the group;
- ``stop()`` stops reading, lets in-flight handlers finish within a timeout, and
  applies their outcomes before returning.

The package is split by concern: :mod:`~riverbed.consumer.types` (what handlers and
services see), :mod:`~riverbed.consumer.reading` (reads, claims, entries in hand),
:mod:`~riverbed.consumer.handling` (running a handler, deciding the outcome),
:mod:`~riverbed.consumer.outcomes` (applying outcomes to Redis),
:mod:`~riverbed.consumer.housekeeping` (heartbeats, take-over, keep-alive, reclaim,
promotion, handler timeouts) and :mod:`~riverbed.consumer.stream_consumer` (the whole).
"""

from riverbed.consumer.naming import default_consumer_name, unused_consumer_name
from riverbed.consumer.stream_consumer import StreamConsumer
from riverbed.consumer.types import (
    DUPLICATE_IN_HAND_WAIT_MS,
    REDIS_DOWN,
    Handler,
    Message,
    PayloadT,
    Subscription,
)

__all__ = [
    "DUPLICATE_IN_HAND_WAIT_MS",
    "REDIS_DOWN",
    "Handler",
    "Message",
    "PayloadT",
    "StreamConsumer",
    "Subscription",
    "default_consumer_name",
    "unused_consumer_name",
]
