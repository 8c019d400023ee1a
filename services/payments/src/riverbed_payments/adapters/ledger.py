"""The ledger and the processed-messages record over SQLAlchemy 2 (async): SQLite or PostgreSQL.

One engine per process (``adapters/database.py``), opened by the lifespan. A
handler's whole effect — the processed-message row, the ledger transaction, the
outbox rows — is one database transaction (:meth:`SqlLedger.unit`).

SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (it takes the write
lock at once, so two writers queue on ``busy_timeout`` instead of one failing when it
upgrades a read lock), and foreign keys are on (the ledger's deferred key needs them).
Reads go through :attr:`SqlLedger.reader`, whose transactions are plain ``BEGIN``.
PostgreSQL: a payment's header row is locked (``FOR UPDATE``) before a refund or a
dispute is checked against it, so two refunds of one payment cannot both pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from riverbed import tracing
from riverbed.outbox import OutboxMessage, add_to_outbox
from riverbed.sql import read_only, upsert
from riverbed_payments.adapters.tables import (
    accounts,
    outbox,
    payment_failures,
    postings,
    processed_messages,
    transactions,
)
from riverbed_payments.domain import ledger
from riverbed_payments.domain.ledger import DisputeFacts, Kind, PaymentFacts, Posting, Transaction
from riverbed_payments.service_layer.ports import Balance, StoredTransaction


class LedgerSession:
    """The statements of one unit of work, on one connection inside one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    # -- exactly once ----------------------------------------------------------------

    async def claim_message(
        self, group: str, event_id: str, *, stream: str, event_type: str, at: datetime
    ) -> bool:
        """Record (group, event id) as processed; False if it already was (a redelivery).

        On PostgreSQL a concurrent claim of the same id waits here for the first to
        commit or roll back, then sees it: the same event is never applied twice.
        """
        statement = (
            upsert(self.dialect, processed_messages)
            .values(
                consumer_group=group,
                event_id=event_id,
                stream=stream,
                event_type=event_type,
                outcome="processing",
                processed_at=at,
            )
            .on_conflict_do_nothing(index_elements=["consumer_group", "event_id"])
        )
        result = await self.conn.execute(statement)
        return bool(result.rowcount)

    async def set_outcome(self, group: str, event_id: str, outcome: str) -> None:
        await self.conn.execute(
            update(processed_messages)
            .where(
                and_(
                    processed_messages.c.consumer_group == group,
                    processed_messages.c.event_id == event_id,
                )
            )
            .values(outcome=outcome)
        )

    # -- reading the ledger --------------------------------------------------------------

    async def find(self, kind: Kind, provider: str, provider_ref: str) -> StoredTransaction | None:
        found = await transactions_where(
            self.conn,
            and_(
                transactions.c.provider == provider,
                transactions.c.kind == kind.value,
                transactions.c.provider_ref == provider_ref,
            ),
        )
        return found[0] if found else None

    async def payment_facts(self, provider: str, provider_payment_id: str) -> PaymentFacts | None:
        """The recorded payment with what was refunded and disputed; locked on PostgreSQL."""
        header = (
            select(transactions.c.id)
            .where(
                and_(
                    transactions.c.provider == provider,
                    transactions.c.kind == Kind.PAYMENT.value,
                    transactions.c.provider_ref == provider_payment_id,
                )
            )
            .with_for_update()
        )
        payment_id = (await self.conn.execute(header)).scalar_one_or_none()
        if payment_id is None:
            return None
        sums = posting_sums(
            transactions.c.kind,
            where=and_(
                transactions.c.provider == provider,
                transactions.c.payment_ref == provider_payment_id,
            ),
        )
        amount = refunded = withdrawn = reinstated = 0
        currency = ""
        for kind, account, posting_currency, total in await self.conn.execute(sums):
            total = int(total)
            if kind == Kind.PAYMENT and account == ledger.SALES:
                amount, currency = -total, posting_currency
            elif kind == Kind.REFUND and account == ledger.REFUNDS:
                refunded += total
            elif kind == Kind.DISPUTE and account == ledger.disputed(provider):
                withdrawn += total
            elif kind == Kind.DISPUTE_REVERSAL and account == ledger.provider_balance(provider):
                reinstated += total
        return PaymentFacts(
            transaction_id=payment_id,
            provider=provider,
            provider_payment_id=provider_payment_id,
            currency=currency,
            amount=amount,
            refunded=refunded,
            disputed=withdrawn - reinstated,
        )

    async def dispute_facts(self, provider: str, provider_dispute_id: str) -> DisputeFacts | None:
        opened = await self.find(Kind.DISPUTE, provider, provider_dispute_id)
        if opened is None:
            return None
        closing = select(func.count()).where(
            and_(
                transactions.c.provider == provider,
                transactions.c.kind.in_([Kind.DISPUTE_REVERSAL.value, Kind.DISPUTE_LOSS.value]),
                transactions.c.provider_ref == provider_dispute_id,
            )
        )
        closed = bool((await self.conn.execute(closing)).scalar_one())
        held = [p for p in opened.postings if p.account == ledger.disputed(provider)]
        return DisputeFacts(
            transaction_id=opened.id,
            provider=provider,
            provider_dispute_id=provider_dispute_id,
            provider_payment_id=opened.payment_ref or "",
            currency=held[0].currency,
            amount=sum(p.amount for p in held),
            closed=closed,
        )

    # -- writing ---------------------------------------------------------------------------

    async def append(self, transaction: Transaction, *, event_id: str, at: datetime) -> None:
        """Store ``transaction``: its accounts (if new), its postings, then its sealing header."""
        codes = sorted({p.account for p in transaction.postings})
        await self.conn.execute(
            upsert(self.dialect, accounts)
            .values([{"code": c, "type": ledger.account_type(c), "created_at": at} for c in codes])
            .on_conflict_do_nothing(index_elements=["code"])
        )
        await self.conn.execute(
            insert(postings),
            [
                {
                    "transaction_id": transaction.id,
                    "account": p.account,
                    "amount": p.amount,
                    "currency": p.currency,
                }
                for p in transaction.postings
            ],
        )
        await self.conn.execute(
            insert(transactions).values(
                id=transaction.id,
                kind=transaction.kind.value,
                provider=transaction.provider,
                provider_ref=transaction.provider_ref,
                payment_ref=transaction.payment_ref,
                reverses_id=transaction.reverses,
                description=transaction.description,
                occurred_at=transaction.occurred_at,
                recorded_at=at,
                event_id=event_id,
            )
        )

    async def add_failure(self, **values: Any) -> None:
        await self.conn.execute(insert(payment_failures).values(**values))

    async def add_outbox(self, messages: Sequence[OutboxMessage], *, at: datetime) -> None:
        """Queue events for the relay; an event id already queued is not queued again."""
        await add_to_outbox(self.conn, outbox, messages, at=at)


def posting_sums(*keys: Any, where: Any) -> Select[Any]:
    """Per ``keys`` (columns of ``transactions``), account and currency: the sum of the
    postings of the transactions ``where`` selects. Rows: (*keys, account, currency, sum)."""
    return (
        select(*keys, postings.c.account, postings.c.currency, func.sum(postings.c.amount))
        .join(postings, postings.c.transaction_id == transactions.c.id)
        .where(where)
        .group_by(*keys, postings.c.account, postings.c.currency)
    )


async def transactions_where(conn: AsyncConnection, condition: Any) -> list[StoredTransaction]:
    """Transactions matching ``condition`` with their postings, oldest first."""
    rows = (
        await conn.execute(
            select(transactions).where(condition).order_by(transactions.c.recorded_at)
        )
    ).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    by_transaction: dict[str, list[Posting]] = {i: [] for i in ids}
    query = (
        select(postings)
        .where(postings.c.transaction_id.in_(ids))
        .order_by(postings.c.transaction_id, postings.c.id)
    )
    for p in await conn.execute(query):
        by_transaction[p.transaction_id].append(Posting(p.account, int(p.amount), p.currency))
    return [
        StoredTransaction(
            id=row.id,
            kind=Kind(row.kind),
            provider=row.provider,
            provider_ref=row.provider_ref,
            payment_ref=row.payment_ref,
            reverses_id=row.reverses_id,
            description=row.description,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            event_id=row.event_id,
            postings=tuple(by_transaction[row.id]),
        )
        for row in rows
    ]


class SqlLedger:
    """Units of work and read queries over the ledger tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = read_only(engine)

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[LedgerSession]:
        """One transaction: committed when the block ends, rolled back if it raises; in a
        span of its own when tracing is on."""
        attributes = {"db.system.name": self.engine.dialect.name}
        with tracing.client_span("ledger transaction", attributes):
            async with self.engine.begin() as conn:
                yield LedgerSession(conn)

    async def balances(
        self, *, account: str | None = None, currency: str | None = None
    ) -> list[Balance]:
        """Every balance, derived from the postings (there is no stored balance to drift)."""
        query = select(
            postings.c.account,
            postings.c.currency,
            func.sum(postings.c.amount),
            func.count(),
        ).group_by(postings.c.account, postings.c.currency)
        if account is not None:
            query = query.where(postings.c.account == account)
        if currency is not None:
            query = query.where(postings.c.currency == currency)
        query = query.order_by(postings.c.account, postings.c.currency)
        async with self.reader.connect() as conn:
            return [Balance(a, c, int(s), int(n)) for a, c, s, n in await conn.execute(query)]

    async def transaction(self, transaction_id: str) -> StoredTransaction | None:
        async with self.reader.connect() as conn:
            found = await transactions_where(conn, transactions.c.id == transaction_id)
        return found[0] if found else None

    async def for_payment(self, provider: str, provider_payment_id: str) -> list[StoredTransaction]:
        condition = and_(
            transactions.c.provider == provider,
            transactions.c.payment_ref == provider_payment_id,
        )
        async with self.reader.connect() as conn:
            return await transactions_where(conn, condition)

    async def page(
        self, *, limit: int, provider: str | None = None, after: str | None = None
    ) -> list[StoredTransaction]:
        """Transactions by id (``after`` pages)."""
        query = select(transactions.c.id).order_by(transactions.c.id).limit(limit)
        if provider is not None:
            query = query.where(transactions.c.provider == provider)
        if after is not None:
            query = query.where(transactions.c.id > after)
        async with self.reader.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
            found = await transactions_where(conn, transactions.c.id.in_(ids))
        return sorted(found, key=lambda t: t.id)

    async def failures(self, provider: str, provider_payment_id: str) -> list[dict[str, Any]]:
        query = (
            select(payment_failures)
            .where(
                and_(
                    payment_failures.c.provider == provider,
                    payment_failures.c.provider_payment_id == provider_payment_id,
                )
            )
            .order_by(payment_failures.c.id)
        )
        async with self.reader.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def processed(self, group: str, event_ids: Iterable[str]) -> dict[str, str]:
        """event id -> outcome, for those of ``event_ids`` that ``group`` processed."""
        query = select(processed_messages.c.event_id, processed_messages.c.outcome).where(
            and_(
                processed_messages.c.consumer_group == group,
                processed_messages.c.event_id.in_(list(event_ids)),
            )
        )
        async with self.reader.connect() as conn:
            return {event_id: outcome for event_id, outcome in await conn.execute(query)}
