"""``riverbed``: the operator's view of Riverbed's streams, for a terminal or a script.

::

    riverbed streams                        every stream: length, dead letters, groups, consumers
    riverbed tail STREAM [-n N] [--follow]  the newest events of a stream, decoded
    riverbed dlq list STREAM [FILTERS]      dead-lettered entries: type, reason, error, attempts
    riverbed dlq show STREAM ENTRY_ID       one dead-lettered entry, its event in full
    riverbed dlq replay STREAM (ENTRY_ID ... | --all) [FILTERS] [--dry-run]
    riverbed dlq purge STREAM (ENTRY_ID ... | --all) [FILTERS] [--dry-run] [--yes]
    riverbed publish TYPE [--data JSON]     publish a test event (its contract's example by default)
    riverbed schedules list                 recurring schedules: status, rule, next and last fire
    riverbed schedules show NAME            one schedule in full
    riverbed schedules upsert NAME (--cron EXPR [--tz ZONE] | --every SECONDS) --type TYPE
                      --data JSON [--subject S] [--source URI] [--start ISO] [--end ISO] [--limit N]
    riverbed schedules pause|resume|remove NAME

FILTERS: ``--type 'email.*'`` (event type, shell-style pattern), ``--error TEXT`` (in the
error type or message, any case), ``--reason REASON``, ``--since WHEN``, ``--until WHEN``
(when it was dead-lettered: ISO 8601, or an age such as ``30m``, ``2h``, ``7d``).

STREAM is a logical stream name (``email.requested``: the key ``rb:{email.requested}:stream``).
Every command takes ``--json``: one JSON document on stdout (``tail``: one JSON object per
line), nothing else. Redis is ``REDIS_URL``, as for the services, or ``--redis-url``.

Replay appends the dead-lettered event, unchanged (same event id), to its stream and removes
it from the dead-letter stream, both in one script. Every group of the stream sees it again;
groups that handled that event id within their idempotency window
(``RIVERBED_CONSUMER_IDEMPOTENCY_TTL_S``, 24 h) skip it.

Schedules are published by the schedulers that run in the services (the gateway runs one),
exactly once each; see :mod:`riverbed.schedules`. Upserting the definition already stored
changes nothing; ``--tz`` defaults to UTC.

The package: :mod:`~riverbed.cli.parser` (the command line), :mod:`~riverbed.cli.usage`
(what the operator typed, checked), :mod:`~riverbed.cli.queries` and
:mod:`~riverbed.cli.dead_letters` (the Redis reads), :mod:`~riverbed.cli.render` (tables,
tab-separated lines, JSON), one module per topic for the commands, and
:mod:`~riverbed.cli.app` (``main``: one command, its exit code).
"""

from __future__ import annotations

from riverbed.cli.app import main
from riverbed.cli.dead_letters import DeadLetter, Filters, dead_letters
from riverbed.cli.queries import ConsumerInfo, GroupInfo, StreamInfo, stream_info
from riverbed.cli.usage import UsageError, parse_when

__all__ = [
    "ConsumerInfo",
    "DeadLetter",
    "Filters",
    "GroupInfo",
    "StreamInfo",
    "UsageError",
    "dead_letters",
    "main",
    "parse_when",
    "stream_info",
]
