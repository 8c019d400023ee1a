"""Outcome records on their way to Redis: an accepted send is never forgotten by its process.

Once the relay has answered 250 the mail is out, and only the sent marker in Redis keeps
a redelivery from sending it again. Records go through this process's table and one
writer:

- the handler puts its record in the table (before any await) and waits until Redis has
  it, so its entry stays pending with this consumer (keep-alive and heartbeat hold it);
- the writer writes everything in the table in one pipelined round trip (``SET NX`` each),
  over a connection nobody else uses: under a burst of sends, a marker waits for one
  round trip, not behind hundreds of other commands for a connection of the shared pool;
- when Redis does not answer (a clean restart takes seconds), the writer retries with
  backoff for as long as the process lives, and once Redis is back writes every waiting
  record within about :data:`LONGEST_RETRY_S`;
- any other delivery of the same request in this process finds the record in the table
  before anything else and never acts on the request again;
- a handler cut off while waiting (handler timeout, shutdown drain) leaves its record in
  the table: the writer carries on without it.

A request given up (``email.failed``) is recorded the same way, so that a redelivery
publishes the same event again instead of trying the relay a second time.

What this cannot cover is the process itself ending with records in the table: a kill -9
between the relay's answer and the write (``riverbed_email_record_seconds`` measures that
window), or a shutdown whose drain ends while Redis is still away; :meth:`Recorder.close`
logs each such record.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from riverbed.eventloop import raise_if_cancelled
from riverbed_email import metrics
from riverbed_email.domain.records import OutcomeRecord, SentRecord
from riverbed_email.service_layer.ports import SendLedger

log = structlog.get_logger(__name__)

Record = OutcomeRecord

#: s; the writer's pause after a failed write, doubled after each failure up to the longest,
#: so once Redis is back every waiting record is written within about the longest pause
FIRST_RETRY_S = 0.05
LONGEST_RETRY_S = 0.5

#: records per round trip: bounds one pipeline's size (a burst takes a few round trips)
BATCH = 1_000


def _outcome(record: Record) -> str:
    return "sent" if isinstance(record, SentRecord) else "failed"


@dataclass
class _Unwritten:
    record: Record
    since: float  # time.perf_counter() when the outcome was decided (the relay's answer)
    written: asyncio.Future[None]
    tries: int = 0


#: every recorder of this process, for the gauge (tests run several services in one)
_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
metrics.UNRECORDED_NOW.set_function(lambda: sum(len(r) for r in list(_recorders)))


class Recorder:
    """Writes outcome records to the ledger; keeps the ones Redis has not taken yet
    (the :class:`~riverbed_email.service_layer.ports.OutcomeRecorder` of the service)."""

    def __init__(
        self, ledger: SendLedger, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.ledger = ledger
        self.sleep = sleep
        self._unwritten: dict[str, _Unwritten] = {}  # in the order the outcomes were decided
        self._writer: asyncio.Task[None] | None = None  # runs while the table is not empty
        _recorders.add(self)

    def __len__(self) -> int:
        return len(self._unwritten)

    def unwritten(self, event_id: str) -> Record | None:
        """The record of this request made in this process and not yet in Redis, if any."""
        entry = self._unwritten.get(event_id)
        return None if entry is None else entry.record

    async def written(self, event_id: str) -> None:
        """Return once this request's record (if one is waiting here) is in Redis."""
        entry = self._unwritten.get(event_id)
        if entry is not None:
            await asyncio.shield(entry.written)

    async def record(self, event_id: str, record: Record, *, since: float | None = None) -> None:
        """Write ``record`` under ``event_id``; return once Redis has it.

        The record is in this process's table from the first instant, before any await;
        cancelling the caller does not stop the writing. ``since``: ``time.perf_counter()``
        when the outcome was decided (for the window metric).
        """
        if event_id not in self._unwritten:
            self._unwritten[event_id] = _Unwritten(
                record,
                time.perf_counter() if since is None else since,
                asyncio.get_running_loop().create_future(),
            )
            if self._writer is None or self._writer.done():
                # a context of its own: the log context of the handler that started it
                # would name that handler's request on lines about every other one
                self._writer = asyncio.create_task(
                    self._write_until_empty(), name="email-records", context=contextvars.Context()
                )
        await self.written(event_id)

    async def close(self) -> list[str]:
        """The service is stopping: stop writing, and log every record still waiting (its
        request will be acted on again by whoever is handed it next). Returns their ids."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        left = list(self._unwritten.items())
        self._unwritten.clear()
        for event_id, entry in left:
            waited_s = round(time.perf_counter() - entry.since, 3)
            if isinstance(entry.record, SentRecord):
                metrics.UNRECORDED.inc()
                log.error(
                    "stopping with an accepted send not recorded: a redelivery will send it "
                    "again (same Message-ID)",
                    request_id=event_id,
                    message_id=entry.record.message_id,
                    waited_s=waited_s,
                )
            else:
                log.error(
                    "stopping with a give-up not recorded: a redelivery will try the request again",
                    request_id=event_id,
                    waited_s=waited_s,
                )
            entry.written.cancel()  # nobody should still wait, but never leave one hanging
        return [event_id for event_id, _ in left]

    # -- writing -------------------------------------------------------------------------

    async def _write_until_empty(self) -> None:
        """Write what waits, round trip after round trip, until nothing does. It ends with
        no await between finding the table empty and returning, so a record added later
        always finds it done and starts another."""
        pause_s = FIRST_RETRY_S
        while self._unwritten:
            # records added while a round trip is out go together in the next one
            if await self._write(list(self._unwritten.items())[:BATCH]):
                pause_s = FIRST_RETRY_S
            else:
                raise_if_cancelled()  # redis-py may swallow close()'s cancel in a command
                await self.sleep(pause_s)
                pause_s = min(pause_s * 2, LONGEST_RETRY_S)

    async def _write(self, batch: list[tuple[str, _Unwritten]]) -> bool:
        """One round trip for the batch; True once Redis has every record of it."""
        for _, entry in batch:
            entry.tries += 1
        try:
            fresh = await self.ledger.record_many([(e, entry.record) for e, entry in batch])
        except Exception as error:  # Redis unreachable, or closed while the service stops
            for event_id, entry in batch:
                if entry.tries == 1:
                    log.warning(
                        "outcome not recorded yet; retrying until Redis answers",
                        request_id=event_id,
                        outcome=_outcome(entry.record),
                        error_type=type(error).__name__,
                        error=str(error),
                    )
            return False
        now = time.perf_counter()
        for (event_id, entry), stored in zip(batch, fresh, strict=True):
            self._unwritten.pop(event_id, None)
            metrics.RECORD_SECONDS.labels(_outcome(entry.record)).observe(now - entry.since)
            if not stored and entry.tries == 1 and isinstance(entry.record, SentRecord):
                # another consumer held this request at the same time and sent it too
                log.warning(
                    "send already recorded by another consumer: sent twice",
                    request_id=event_id,
                )
            if entry.tries > 1:
                # a later try that finds the record may find our own earlier try's write
                log.info(
                    "outcome recorded after Redis answered again",
                    request_id=event_id,
                    outcome=_outcome(entry.record),
                    tries=entry.tries,
                    waited_s=round(now - entry.since, 3),
                )
            if not entry.written.done():
                entry.written.set_result(None)
        return True
