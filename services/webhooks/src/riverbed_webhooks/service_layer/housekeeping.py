"""The service's periodic chores: pruning the delivery log and sampling the gauges that
only the database knows (the bootstrap runs each on its own interval)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from riverbed_webhooks import metrics
from riverbed_webhooks.service_layer.ports import Clock, EndpointRepository

log = structlog.get_logger(__name__)


class PrunableLog(Protocol):
    """A delivery log that can forget finished deliveries."""

    async def prune(self, finished_before: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` deliveries finished before ``finished_before`` (with
        their attempts); how many were deleted."""
        ...


@dataclass
class LogPruner:
    """Deletes finished deliveries older than ``retention``, ``batch`` per transaction, so
    the log (which keeps every body for replays) does not grow without bound. Replicas
    may prune at once: harmless, each row goes once."""

    log: PrunableLog
    clock: Clock
    retention: timedelta
    batch: int

    async def prune(self) -> int:
        """One pruning round, until nothing older is left; how many deliveries went."""
        cutoff = self.clock() - self.retention
        deleted, pruned = self.batch, 0
        while deleted == self.batch:  # a short batch means nothing older is left
            deleted = await self.log.prune(cutoff, limit=self.batch)
            pruned += deleted
            metrics.LOG_PRUNED.inc(deleted)
        if pruned:
            log.info("delivery log pruned", deliveries=pruned, finished_before=cutoff)
        return pruned


async def refresh_gauges(repository: EndpointRepository) -> None:
    """Sample the database-backed gauges (the disabled endpoints)."""
    metrics.DISABLED_ENDPOINTS.set(await repository.count_disabled())
