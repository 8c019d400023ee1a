"""Signed POSTs with aiohttp, behind the SSRF guard.

The guard is enforced where the connection is made, on the address actually
dialled, so that a DNS answer that changes between a check and the connect (DNS
rebinding) cannot slip through:

- :class:`GuardedResolver` resolves a host name and keeps only the addresses the
  policy permits (none left: the request fails as ``blocked`` before any connect);
  aiohttp then connects only to what the resolver returned. A host that spells an
  IPv4 address in a non-canonical form (``2130706433``, ``127.1``…: an endpoint
  registered before such hosts were refused) is refused before it is resolved, since
  the system resolver would read it as an address.
- :func:`guarded_socket_factory` is the last word: aiohttp calls it for every
  address right before ``connect()``, IP-literal hosts included (those bypass
  the resolver), and it refuses to make a socket for a refused address.

Redirects are never followed, proxies from the environment are ignored, the
whole request has one timeout, and only the first bytes of a response body are
read and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from opentelemetry.trace import Status, StatusCode

from riverbed import tracing
from riverbed_webhooks.domain.addresses import AddressPolicy, BlockedAddress, non_canonical_ipv4
from riverbed_webhooks.service_layer.ports import SendResult, WebhookRequest

USER_AGENT: Final = "Riverbed-Webhooks/1"

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and drops every address ``policy`` refuses."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        spelling = non_canonical_ipv4(host)
        if spelling is not None:
            raise BlockedAddress(host, f"not a host name: {spelling}")
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.permits(r["host"])]
        if not allowed:
            first = results[0]["host"] if results else host
            raise BlockedAddress(
                f"{host} -> {first}", self.policy.reason_to_refuse(first) or "refused"
            )
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def guarded_socket_factory(policy: AddressPolicy) -> Callable[[AddrInfo], socket.socket]:
    """A socket factory that refuses to make a socket for an address ``policy`` refuses."""

    def factory(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check(ipaddress.ip_address(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def _server_of(url: str) -> dict[str, str | int]:
    """A webhook call's span attributes: the method, and the URL's host and port only."""
    attributes: dict[str, str | int] = {"http.request.method": "POST"}
    with contextlib.suppress(ValueError):  # a bad URL fails in the send, as it always has
        parts = urlsplit(url)
        attributes["server.address"] = parts.hostname or ""
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return attributes


def _blocked(error: BaseException) -> BlockedAddress | None:
    """The guard's refusal somewhere in ``error``'s chain (aiohttp wraps it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddress):
            return current
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, BlockedAddress):
            return os_error
        current = current.__cause__ or current.__context__
    if "refused by the SSRF guard" in str(error):  # several addresses: aiohttp joins the errors
        return BlockedAddress("?", str(error))
    return None


class AiohttpSender:
    """:class:`~riverbed_webhooks.service_layer.ports.WebhookSender` over one aiohttp session."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        timeout_s: float,
        max_response_bytes: int,
        resolver: AbstractResolver | None = None,
        max_connections: int = 500,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._resolver = GuardedResolver(policy, resolver)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            socket_factory=guarded_socket_factory(self.policy),
            limit=self._max_connections,
            ttl_dns_cache=10,  # s; the cache only ever holds addresses the guard permitted
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            trust_env=False,  # no HTTP(S)_PROXY: a proxy would connect where we cannot check
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: WebhookRequest) -> SendResult:
        """POST ``request``, in a span of its own when tracing is on (the URL's host and
        port only: a path or query may hold a subscriber's token)."""
        with tracing.client_span("POST", _server_of(request.url)) as span:
            result = await self._send(request)
            if span.is_recording():
                if result.status_code is not None:
                    span.set_attribute("http.response.status_code", result.status_code)
                if result.error_kind is not None:
                    span.set_attribute("error.type", result.error_kind)
                if result.status_code is None or result.status_code >= 400:
                    span.set_status(Status(StatusCode.ERROR, result.error or ""))
            return result

    async def _send(self, request: WebhookRequest) -> SendResult:
        if self._session is None:
            raise RuntimeError("the sender is not started")
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            async with self._session.post(
                request.url,
                data=request.body,
                headers={**request.headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(self.max_response_bytes)
                return SendResult(
                    status_code=response.status,
                    duration_ms=elapsed_ms(),
                    retry_after=response.headers.get("Retry-After"),
                    body=raw.decode("utf-8", errors="replace"),
                )
        except TimeoutError:
            return SendResult(
                None,
                elapsed_ms(),
                error=f"no answer within {self.timeout_s:g} s",
                error_kind="timeout",
            )
        except aiohttp.InvalidURL as error:
            return SendResult(
                None, elapsed_ms(), error=f"invalid URL: {error}", error_kind="invalid_url"
            )
        except (aiohttp.ClientError, OSError) as error:
            blocked = _blocked(error)
            if blocked is not None:
                return SendResult(None, elapsed_ms(), error=str(blocked), error_kind="blocked")
            return SendResult(
                None,
                elapsed_ms(),
                error=f"{type(error).__name__}: {error}",
                error_kind="connection",
            )
        except asyncio.CancelledError:
            raise
