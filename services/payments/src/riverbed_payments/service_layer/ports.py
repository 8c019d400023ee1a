"""The ports the use cases need; the SQL adapters implement them, tests may fake them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from riverbed_payments.adapters.sql import OutboxMessage, StoredTransaction
from riverbed_payments.domain.ledger import DisputeFacts, Kind, PaymentFacts, Transaction

Clock = Callable[[], datetime]


class LedgerUnit(Protocol):
    """What one unit of work (one database transaction) can do."""

    async def claim_message(
        self, group: str, event_id: str, *, stream: str, event_type: str, at: datetime
    ) -> bool: ...

    async def set_outcome(self, group: str, event_id: str, outcome: str) -> None: ...

    async def find(
        self, kind: Kind, provider: str, provider_ref: str
    ) -> StoredTransaction | None: ...

    async def payment_facts(
        self, provider: str, provider_payment_id: str
    ) -> PaymentFacts | None: ...

    async def dispute_facts(
        self, provider: str, provider_dispute_id: str
    ) -> DisputeFacts | None: ...

    async def append(self, transaction: Transaction, *, event_id: str, at: datetime) -> None: ...

    async def add_failure(self, **values: Any) -> None: ...

    async def add_outbox(self, messages: Sequence[OutboxMessage], *, at: datetime) -> None: ...


class Ledger(Protocol):
    def unit(self) -> AbstractAsyncContextManager[LedgerUnit]: ...
