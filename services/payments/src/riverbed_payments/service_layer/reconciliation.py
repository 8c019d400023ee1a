"""Reconciling a settlement report against the ledger.

``receive`` streams an uploaded report into storage, one chunk of lines per
transaction, validating every line (a report with one bad line is refused whole,
naming the line). ``run`` then matches it, again chunk by chunk:

1. every line is matched to the ledger by (kind, provider id) and classified:
   matched, missing in the ledger, or amount mismatch;
2. ledger transactions of the report's period that move the provider balance and
   that no line accounts for become lines of class *missing at provider*;
3. per payout: gross - fees - refunds - disputes must equal the amount paid out;
4. the report is completed with its counts.

Each discrepancy is one ``payment.reconciliation.mismatch.v1`` and the end one
``payment.reconciliation.completed.v1``, queued in the outbox in the same transaction
as the rows they report. Event ids derive from the report and the line, so ``run``
can be repeated after a crash (it resumes where it stopped) without emitting twice.
"""

from __future__ import annotations

import codecs
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import structlog

from riverbed.errors import RiverbedError
from riverbed.outbox import OutboxMessage
from riverbed_contracts.payments import ReconciliationCompleted, ReconciliationMismatch
from riverbed_payments import metrics
from riverbed_payments.domain.ledger import Kind
from riverbed_payments.domain.reconciliation import (
    LedgerFigures,
    LineClass,
    RecordSplitter,
    ReportError,
    ReportLine,
    classify,
    header_columns,
    parse_line,
    split_record,
)
from riverbed_payments.service_layer.events import own_event, routed
from riverbed_payments.service_layer.ports import Clock, ReportStore

log = structlog.get_logger(__name__)

#: line type shown for a ledger transaction the report lacks, by kind
_TYPE_OF_KIND = {
    Kind.PAYMENT.value: "charge",
    Kind.REFUND.value: "refund",
    Kind.DISPUTE.value: "dispute",
    Kind.DISPUTE_REVERSAL.value: "dispute_reversal",
    Kind.PAYOUT.value: "payout",
}


class TooLarge(RiverbedError):
    """The upload is larger than the configured limit."""


def new_report_id() -> str:
    return f"rec_{uuid.uuid4().hex}"


class Reconciler:
    def __init__(
        self,
        store: ReportStore,
        *,
        stream_for: Callable[[str], str],
        clock: Clock,
        chunk_lines: int = 500,
        max_bytes: int = 512 * 1024 * 1024,
        max_record_chars: int = 64 * 1024,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.stream_for = stream_for
        self.clock = clock
        self.chunk_lines = chunk_lines
        self.max_bytes = max_bytes
        self.max_record_chars = max_record_chars
        self.on_commit = on_commit

    # -- receiving ---------------------------------------------------------------------------

    async def receive(
        self,
        provider: str,
        body: AsyncIterator[bytes],
        *,
        filename: str | None = None,
        period: tuple[datetime | None, datetime | None] = (None, None),
    ) -> str:
        """Store the report streamed in ``body``; returns its id. Raises ReportError, TooLarge.

        A refused report stays stored as ``failed``, with the reason.
        """
        report_id = new_report_id()
        await self.store.create(report_id, provider, filename, self.clock())
        try:
            lines, first, last = await self._store_lines(report_id, body)
        except (ReportError, TooLarge, UnicodeDecodeError) as error:
            await self.store.fail(report_id, str(error), self.clock())
            metrics.RECONCILIATIONS.labels("failed").inc()
            raise
        start, end = period
        await self.store.received(
            report_id, lines=lines, period_start=start or first, period_end=end or last
        )
        log.info("settlement report received", report_id=report_id, lines=lines)
        return report_id

    async def _store_lines(
        self, report_id: str, body: AsyncIterator[bytes]
    ) -> tuple[int, datetime | None, datetime | None]:
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        splitter = RecordSplitter(self.max_record_chars)
        columns: dict[str, int] | None = None
        chunk: list[ReportLine] = []
        size = count = 0
        first: datetime | None = None
        last: datetime | None = None

        async def take(records: Any) -> None:
            nonlocal columns, count, first, last
            for record in records:
                number = splitter.records
                if not record.strip():
                    continue
                fields = split_record(record, number)
                if columns is None:
                    columns = header_columns(fields)
                    continue
                line = parse_line(fields, columns, number)
                chunk.append(line)
                count += 1
                first = line.created if first is None else min(first, line.created)
                last = line.created if last is None else max(last, line.created)
                if len(chunk) >= self.chunk_lines:
                    await self.store.add_lines(report_id, chunk)
                    chunk.clear()

        async for data in body:
            size += len(data)
            if size > self.max_bytes:
                raise TooLarge(f"the report is larger than {self.max_bytes} bytes")
            await take(splitter.feed(decoder.decode(data)))
        await take(splitter.feed(decoder.decode(b"", final=True)))
        await take(splitter.close())
        if columns is None:
            raise ReportError("the report is empty: it needs a header line and lines")
        await self.store.add_lines(report_id, chunk)
        return count, first, last

    # -- matching -------------------------------------------------------------------------------

    async def run(self, report_id: str) -> dict[str, Any]:
        """Match, check payouts, complete; safe to call again on a report it left half done."""
        report = await self.store.get(report_id)
        if report is None or report["status"] != "processing":
            raise ValueError(f"report {report_id} is not waiting to be matched")
        provider = report["provider"]
        try:
            await self._match_lines(report_id, provider)
            if report["period_start"] is not None and report["period_end"] is not None:
                await self._missing_at_provider(
                    report_id, provider, report["period_start"], report["period_end"]
                )
            await self._check_payouts(report_id, provider)
            counts = await self.store.class_counts(report_id)
            discrepancies = sum(
                counts.get(c, 0)
                for c in ("missing_in_ledger", "missing_at_provider", "amount_mismatch")
            ) + counts.get("payouts_unbalanced", 0)
            now = self.clock()
            completed = own_event(
                ReconciliationCompleted(
                    report_id=report_id,
                    provider=provider,
                    status="discrepancies" if discrepancies else "balanced",
                    lines=report["lines"],
                    matched=counts.get("matched", 0),
                    missing_in_ledger=counts.get("missing_in_ledger", 0),
                    missing_at_provider=counts.get("missing_at_provider", 0),
                    amount_mismatch=counts.get("amount_mismatch", 0),
                    payouts=counts["payouts"],
                    payouts_unbalanced=counts["payouts_unbalanced"],
                    period_start=report["period_start"],
                    period_end=report["period_end"],
                    completed_at=now,
                ),
                "payment.reconciliation.completed.v1",
                report_id,
                subject=report_id,
                at=now,
            )
            await self.store.complete(report_id, counts, routed(completed, self.stream_for), now)
        except Exception as error:
            log.error("reconciliation failed", report_id=report_id, error=str(error))
            await self.store.fail(report_id, f"{type(error).__name__}: {error}", self.clock())
            metrics.RECONCILIATIONS.labels("failed").inc()
            raise
        self.on_commit()
        metrics.RECONCILIATIONS.labels(completed.data["status"]).inc()
        log.info("reconciliation completed", report_id=report_id, **counts)
        done = await self.store.get(report_id)
        assert done is not None
        return done

    def _mismatch(self, report_id: str, provider: str, key: str, **fields: Any) -> OutboxMessage:
        event = own_event(
            ReconciliationMismatch(report_id=report_id, provider=provider, **fields),
            "payment.reconciliation.mismatch.v1",
            report_id,
            key,
            subject=report_id,
            at=self.clock(),
        )
        return routed(event, self.stream_for)

    async def _match_lines(self, report_id: str, provider: str) -> None:
        while True:
            rows = await self.store.unclassified(report_id, self.chunk_lines)
            if not rows:
                return
            figures = await self.store.ledger_figures(
                provider, sorted({(row.kind, row.source) for row in rows})
            )
            updates, events = [], []
            for row in rows:
                found = figures.get((row.kind, row.source))
                line_class, detail = classify(_report_line(row), found)
                metrics.RECONCILIATION_LINES.labels(line_class.value).inc()
                updates.append(
                    {"seq": row.seq, "class": line_class.value, **_ledger_side(found),
                     "detail": detail or None}
                )  # fmt: skip
                if line_class is not LineClass.MATCHED:
                    events.append(
                        self._mismatch(
                            report_id,
                            provider,
                            f"line:{row.line}",
                            kind=line_class.value,
                            source=row.source,
                            line=row.line,
                            line_type=row.type,
                            currency=row.currency,
                            payout_id=row.payout_id,
                            provider_amount=row.amount,
                            provider_fee=row.fee,
                            provider_net=row.net,
                            **_ledger_side(found),
                            detail=detail,
                        )
                    )
            await self.store.classify(updates, events, self.clock())
            if events:
                self.on_commit()

    async def _missing_at_provider(
        self, report_id: str, provider: str, start: datetime, end: datetime
    ) -> None:
        while True:
            figures = await self.store.not_in_report(
                report_id, provider, start, end, self.chunk_lines
            )
            if not figures:
                return
            rows, events = [], []
            for (kind, source), found in sorted(figures.items()):
                detail = f"{kind} {source} is in the ledger but not in the report"
                metrics.RECONCILIATION_LINES.labels(LineClass.MISSING_AT_PROVIDER.value).inc()
                rows.append(_missing_row(report_id, kind, source, found, detail))
                events.append(
                    self._mismatch(
                        report_id,
                        provider,
                        f"ledger:{found.transaction_id}",
                        kind=LineClass.MISSING_AT_PROVIDER.value,
                        source=source,
                        line_type=_TYPE_OF_KIND.get(kind),
                        currency=found.currency,
                        **_ledger_side(found),
                        detail=detail,
                    )
                )
            await self.store.add_missing(rows, events, self.clock())
            self.on_commit()

    async def _check_payouts(self, report_id: str, provider: str) -> None:
        totals = await self.store.payout_totals(report_id)
        events = [
            self._mismatch(
                report_id,
                provider,
                f"payout:{t.payout_id}:{t.currency}",
                kind="payout_unbalanced",
                source=t.payout_id,
                line_type="payout",
                currency=t.currency,
                payout_id=t.payout_id,
                provider_amount=t.expected,
                provider_net=-t.payout_amount if t.payout_amount is not None else None,
                detail=t.detail(),
            )
            for t in totals
            if not t.balanced
        ]
        await self.store.save_payouts(report_id, totals, events, self.clock())
        if events:
            self.on_commit()


def _missing_row(
    report_id: str, kind: str, source: str, found: LedgerFigures, detail: str
) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "line": None,
        "provider_txn_id": None,
        "type": _TYPE_OF_KIND.get(kind, kind),
        "kind": kind,
        "source": source,
        "currency": found.currency,
        "class": LineClass.MISSING_AT_PROVIDER.value,
        **_ledger_side(found),
        "detail": detail,
    }


def _ledger_side(found: LedgerFigures | None) -> dict[str, Any]:
    """The ledger's figures of a line (all None where the ledger has no transaction), as
    both the stored line and its mismatch event name them."""
    return {
        "ledger_transaction_id": found.transaction_id if found else None,
        "ledger_amount": found.amount if found else None,
        "ledger_fee": found.fee if found else None,
        "ledger_net": found.net if found else None,
    }


def _report_line(row: Any) -> ReportLine:
    """A stored line (a ``report_lines`` row) as the domain classifies it."""
    return ReportLine(
        line=row.line,
        id=row.provider_txn_id,
        type=row.type,
        kind=Kind(row.kind),
        source=row.source,
        amount=row.amount,
        fee=row.fee,
        net=row.net,
        currency=row.currency,
        payout_id=row.payout_id,
        created=row.created,
    )
