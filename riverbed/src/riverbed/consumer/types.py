"""The consumer's types: what a handler gets (:class:`Message`), what a service subscribes
(:class:`Subscription`), and what a handled entry came to (:class:`Outcome`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from riverbed.backoff import Backoff
from riverbed_contracts import CloudEvent

PayloadT = TypeVar("PayloadT", bound=BaseModel)

#: how long a second entry of an event being handled here waits before it is looked at
#: again (ms): by then the first has usually concluded, and its record skips the copy
DUPLICATE_IN_HAND_WAIT_MS = 1_000

#: errors that mean "Redis is unreachable right now": wait and try again
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

#: outcomes applied (or acknowledgements carried) per script call at most: bounds a
#: call's arguments
MOST_PER_CALL = 1_000

#: the outcome type of another group's retry: acknowledged, never counted as handled
NOT_OURS = "another-group"


@dataclass(frozen=True)
class Message(Generic[PayloadT]):
    """One delivered event, as a handler sees it."""

    event: CloudEvent
    payload: PayloadT
    entry_id: str
    stream: str
    attempt: int  # this delivery's number for this group: 1 on the first delivery
    #: when this group first received the event (ms since the epoch), carried across retries
    #: and deferrals: how long an event has been waiting, whatever its attempt count says
    first_seen_ms: int = 0

    @classmethod
    def of(
        cls,
        event: CloudEvent,
        payload: PayloadT,
        entry_id: str,
        stream: str,
        attempt: int,
        first_seen_ms: int,
    ) -> Message[PayloadT]:
        """The same message as the constructor makes, in half its time (~0.4 against
        ~0.9 µs): a frozen dataclass sets each field through ``object.__setattr__``, this
        sets the instance's dict in one go. The consumer makes one per message."""
        message = _new_object(cls)
        _set_attribute(
            message,
            "__dict__",
            {
                "event": event,
                "payload": payload,
                "entry_id": entry_id,
                "stream": stream,
                "attempt": attempt,
                "first_seen_ms": first_seen_ms,
            },
        )
        return message


_new_object = object.__new__
_set_attribute = object.__setattr__


#: a handler gets a message and returns the events it wants published (or None);
#: they are published before the entry is acknowledged.
Handler = Callable[[Message[Any]], Awaitable[Sequence[CloudEvent] | None]]


@dataclass(frozen=True)
class Subscription:
    """What a service consumes: one stream, one group, one handler."""

    stream: str
    group: str
    handler: Handler
    idempotent: bool = True  # skip events whose id this group already handled
    backoff: Backoff | None = None  # None: exponential, from ConsumerSettings
    start_id: str = "0"  # where a newly created group starts: "0" = everything retained
    handler_timeout_s: float | None = None  # None: ConsumerSettings.handler_timeout_s


#: one entry read or claimed: (entry id, fields, attempt, first seen ms, event or why not,
#: or the event's id alone when its document is parsed as its handler starts)
Decoded = tuple[str, dict[bytes, bytes], int, int, CloudEvent | Exception | str]


@dataclass
class Outcome:
    """What handling one entry came to, kept until it is applied to Redis."""

    entry_id: str
    event_type: str
    event_id: str | None
    kind: str  # "ack" | "retry" | "dead"
    delay_ms: int = 0
    error: BaseException | None = None
    raw: dict[bytes, bytes] = field(default_factory=dict)
    attempt: int = 1
    reason: str = ""
    counted: bool = True  # False: a deferral, the next delivery keeps this attempt
    first_seen_ms: int = 0
