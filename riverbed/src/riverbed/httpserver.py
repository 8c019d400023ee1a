"""The HTTP server every service embeds: uvicorn without its own signal handling, with a
deadline for request heads (slowloris), and the start-up freeze of the garbage collector."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Generator

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head does not arrive
    in time: uvicorn has a keep-alive timeout, but nothing for a connection that never sends
    a request, or trickles one in (slowloris); each would hold a connection forever.

    The deadline is set when the connection opens and again when the first byte of a next
    request's head arrives, and cleared when the head is complete; a request's body and the
    app's time are not limited here.
    """

    head_timeout_s = 5.0  # s; replaced per server (head_timeout_protocol)
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()  # the first bytes of the next request's head
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            # debug: every idle connection a load balancer opens ahead would log a line
            log.debug(
                "closing a connection: no complete request head in time",
                client=f"{self.client[0]}:{self.client[1]}" if self.client else None,
                timeout_s=self.head_timeout_s,
            )
            self.transport.close()


def head_timeout_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's protocol class (``Config(http=…)``) closing connections whose request head
    is not complete within ``timeout_s`` seconds."""
    return type("HeadTimeoutProtocol", (_HeadTimeoutProtocol,), {"head_timeout_s": timeout_s})


def freeze_start_up_objects() -> None:
    """Move everything built at start-up (modules, pydantic validators, routes, settings)
    out of the collector's reach, so a full collection walks only what requests made.

    Measured on the gateway (2 cores, 32 requests in flight): full collections of the
    ~80,000 start-up objects took ~27 ms each, about three a second, and were its whole
    latency tail; frozen, p99 fell from ~37 ms to ~10 ms and throughput rose ~8 %.
    The frozen objects are never freed, which is what start-up state is for anyway.
    """
    gc.collect()
    gc.freeze()
