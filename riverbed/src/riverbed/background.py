"""Background work of a service: periodic chores and long-running tasks, started after the
service's lifespan has yielded and cancelled before its consumers drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from riverbed import eventloop
from riverbed.monitor import StreamMonitor
from riverbed.publisher import written_streams
from riverbed.settings import RetentionSettings

log = structlog.get_logger(__name__)


async def every(interval_s: float, work: Callable[[], Awaitable[object]], *, failing: str) -> None:
    """Run ``work`` now and then every ``interval_s`` seconds until cancelled: a service's
    background chore. A failure is logged as ``failing`` and the next round comes as planned."""
    while True:
        try:
            await work()
        except Exception as error:
            log.warning(failing, error=str(error))
        eventloop.raise_if_cancelled()
        await asyncio.sleep(interval_s)


async def cancel_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel background tasks (``None`` is skipped) and wait until each has ended."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def logged(work: Awaitable[object], *, failing: str) -> None:
    try:
        await work
    except Exception as error:
        log.error(failing, error=str(error))


async def retention_loop(
    monitor: StreamMonitor, settings: RetentionSettings, interval_s: float
) -> None:
    """Every ``interval_s`` seconds, trim the streams ``monitor`` watches and those this
    process writes, and their dead letters: what every group acknowledged, or by age
    where no group reads a stream."""
    while True:
        await asyncio.sleep(interval_s)
        for stream in sorted(set(monitor.streams) | written_streams()):
            try:
                await monitor.apply_retention(stream, settings)
            except Exception as error:
                log.warning("retention trim failed", stream=stream, error=str(error))
            eventloop.raise_if_cancelled()
