"""Helpers of tests of consumers and handlers: events, polling, short timers, processes.

No pytest at import: scripts and benchmarks use them too. ``wait_for`` fails a test
with pytest's own failure when it times out, importing pytest only then.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from riverbed.consumer import Message, StreamConsumer
from riverbed.settings import ConsumerSettings
from riverbed_contracts import CloudEvent
from riverbed_contracts.registry import get_spec

#: the event type the runtime tests publish; any registered type would do
TEST_TYPE = "payment.succeeded.v1"
TEST_STREAM = "payment.succeeded"


def make_event(n: int, **attributes: Any) -> CloudEvent:
    data = {
        "provider": "stripe",
        "provider_payment_id": f"pi_{n:06d}",
        "amount": 1000 + n,
        "currency": "EUR",
    }
    return CloudEvent(type=TEST_TYPE, data=data, source="urn:riverbed:test", **attributes)


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 15.0,  # noqa: ASYNC109 - s; the deadline is what this helper is for
    what: str = "condition",
) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds. Never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            import pytest  # only here: importing riverbed.testing must not need pytest

            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def fast_settings(**overrides: Any) -> ConsumerSettings:
    """Consumer settings with short timers, so behaviours show within a test's time."""
    values: dict[str, Any] = {
        "block_ms": 50,
        "visibility_timeout_ms": 1_000,
        "reclaim_interval_ms": 100,
        "retry_base_ms": 50,
        "retry_max_ms": 200,
        "retry_jitter": 0.0,
        "ack_flush_ms": 1,
        "max_deliveries": 3,
        "shutdown_timeout_s": 5,
        "heartbeat_interval_ms": 100,
        "heartbeat_timeout_ms": 1_000,
    }
    values.update(overrides)
    return ConsumerSettings(**values)


#: what the ``start_consumer`` fixture gives a test: call it to start a consumer
ConsumerFactory = Callable[..., StreamConsumer]


def message_for(event: CloudEvent, *, attempt: int = 1, entry_id: str = "0-1") -> Message[Any]:
    """The Message a handler would get for ``event``: for unit tests of handlers, no Redis.

    The payload is validated against the contract exactly as the consumer does it, so a
    handler test cannot pass on data the runtime would have dead-lettered.
    """
    spec = get_spec(event.type)
    return Message(event, spec.model.model_validate(event.data), entry_id, spec.stream, attempt)


class Processes:
    """Python scripts a test runs as real processes (for kill -9 and SIGTERM tests).

    Each writes its output to ``<tmp>/<name>.log``; every one still running is killed at
    teardown of the ``processes`` fixture.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, script: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Run ``script`` with this interpreter, the test's environment plus ``env``."""
        with open(self.tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(  # noqa: S603 - the test's own script
                [sys.executable, str(script)],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()
