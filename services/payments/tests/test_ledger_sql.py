"""The database keeps the ledger honest on its own, on SQLite and PostgreSQL alike.

Whatever code writes to it: a transaction's postings sum to zero per currency, a
committed transaction cannot gain postings, nothing is updated or deleted, amounts
are never zero, currencies are three uppercase letters, provider ids are unique.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from riverbed_payments.adapters.ledger import SqlLedger
from riverbed_payments.adapters.tables import accounts, postings, transactions
from riverbed_payments.domain import ledger
from riverbed_payments.testing import T0

SALES, PROVIDER = ledger.SALES, ledger.provider_balance("stripe")


async def _accounts(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(accounts),
            [
                {"code": code, "type": ledger.account_type(code), "created_at": T0}
                for code in (SALES, PROVIDER)
            ],
        )


def _header(transaction_id: str, ref: str = "pi_1") -> dict[str, Any]:
    return {
        "id": transaction_id,
        "kind": "payment",
        "provider": "stripe",
        "provider_ref": ref,
        "payment_ref": ref,
        "description": "",
        "occurred_at": T0,
        "recorded_at": T0,
        "event_id": f"evt-{transaction_id}",
    }


async def _write(engine: AsyncEngine, rows: list[tuple[str, int, str]], header: bool) -> None:
    """Postings of transaction t1 written behind the code's back, then (maybe) its header."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(postings),
            [
                {"transaction_id": "t1", "account": a, "amount": n, "currency": c}
                for a, n, c in rows
            ],
        )
        if header:
            await conn.execute(insert(transactions).values(**_header("t1")))


BALANCED = [(PROVIDER, 1999, "EUR"), (SALES, -1999, "EUR")]


async def test_a_balanced_transaction_is_stored_and_balances_derive_from_postings(
    engine: AsyncEngine,
) -> None:
    await _accounts(engine)
    await _write(engine, BALANCED, header=True)
    found = await SqlLedger(engine).balances()
    assert [(b.account, b.currency, b.balance) for b in found] == [
        (PROVIDER, "EUR", 1999),
        (SALES, "EUR", -1999),
    ]


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        ([(PROVIDER, 1999, "EUR"), (SALES, -1990, "EUR")], "sum to zero"),
        ([(PROVIDER, 1999, "EUR"), (SALES, -1999, "USD")], "sum to zero"),
        ([(PROVIDER, 1999, "EUR")], "at least 2 postings"),
    ],
    ids=["off-by-9", "two-currencies", "one-posting"],
)
async def test_the_database_refuses_an_unbalanced_transaction(
    engine: AsyncEngine, rows: list[tuple[str, int, str]], why: str
) -> None:
    await _accounts(engine)
    with pytest.raises(DBAPIError, match=why):
        await _write(engine, rows, header=True)
    assert await SqlLedger(engine).balances() == []


async def test_postings_without_their_sealing_header_cannot_be_committed(
    engine: AsyncEngine,
) -> None:
    await _accounts(engine)
    with pytest.raises(DBAPIError):  # the deferred foreign key fails at COMMIT
        await _write(engine, [(PROVIDER, 1999, "EUR")], header=False)
    assert await SqlLedger(engine).balances() == []


async def test_a_committed_transaction_cannot_gain_postings(engine: AsyncEngine) -> None:
    await _accounts(engine)
    await _write(engine, BALANCED, header=True)
    with pytest.raises(DBAPIError, match="sealed"):
        async with engine.begin() as conn:
            await conn.execute(
                insert(postings).values(
                    transaction_id="t1", account=PROVIDER, amount=1, currency="EUR"
                )
            )


@pytest.mark.parametrize("table", [postings, transactions], ids=["postings", "transactions"])
async def test_the_ledger_is_append_only(engine: AsyncEngine, table: Any) -> None:
    await _accounts(engine)
    await _write(engine, BALANCED, header=True)
    for statement in (
        update(table).values(description="x")
        if table is transactions
        else update(table).values(amount=5),
        delete(table),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(statement)
    assert len(await SqlLedger(engine).balances()) == 2


@pytest.mark.parametrize(
    "rows",
    [[(PROVIDER, 0, "EUR"), (SALES, 0, "EUR")], [(PROVIDER, 5, "eur"), (SALES, -5, "eur")]],
    ids=["zero-amount", "lowercase-currency"],
)
async def test_postings_need_a_nonzero_amount_and_an_uppercase_currency(
    engine: AsyncEngine, rows: list[tuple[str, int, str]]
) -> None:
    await _accounts(engine)
    with pytest.raises(DBAPIError):
        await _write(engine, rows, header=True)


async def test_one_transaction_per_provider_object(engine: AsyncEngine) -> None:
    store = SqlLedger(engine)
    first = ledger.payment(
        provider="stripe", provider_payment_id="pi_1", amount=500, currency="EUR", fee=None,
        occurred_at=T0,
    )  # fmt: skip
    async with store.unit() as unit:
        await unit.append(first, event_id="e1", at=T0)
    twin = ledger.Transaction(**{**first.__dict__, "id": "another-id"})
    with pytest.raises(DBAPIError):  # uq_ledger_transactions_provider_ref
        async with store.unit() as unit:
            await unit.append(twin, event_id="e2", at=T0)
    assert [t.id for t in await store.for_payment("stripe", "pi_1")] == [first.id]


async def test_a_message_is_claimed_once_per_group(engine: AsyncEngine) -> None:
    store = SqlLedger(engine)
    async with store.unit() as unit:
        assert await unit.claim_message("payments", "e1", stream="s", event_type="t", at=T0)
        assert not await unit.claim_message("payments", "e1", stream="s", event_type="t", at=T0)
        assert await unit.claim_message("audit", "e1", stream="s", event_type="t", at=T0)
    assert await store.processed("payments", ["e1", "e2"]) == {"e1": "processing"}
