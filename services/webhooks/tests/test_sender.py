"""The aiohttp sender against real loopback receivers, and the SSRF guard at its seams.

No test here connects to anything but 127.0.0.1: refused addresses are produced by
a resolver that returns fixed answers, and the guard refuses them before a socket
exists.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from riverbed_webhooks.adapters.http_sender import (
    AiohttpSender,
    GuardedResolver,
    guarded_socket_factory,
)
from riverbed_webhooks.domain.addresses import AddressPolicy, BlockedAddress, parse_networks
from riverbed_webhooks.domain.signing import generate_secret, signed_headers
from riverbed_webhooks.service_layer.ports import WebhookRequest

LOOPBACK = AddressPolicy(parse_networks(["127.0.0.1/32"]))
BODY = b'{"id":"evt_1","type":"payment.succeeded.v1","data":{}}'


class FixedResolver(AbstractResolver):
    """Answers every name with fixed addresses and records what it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a
             else socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}
            for a in self.addresses
        ]  # fmt: skip

    async def close(self) -> None:
        pass


@pytest.fixture
async def make_sender() -> AsyncIterator[Any]:
    made: list[AiohttpSender] = []

    async def factory(policy: AddressPolicy = LOOPBACK, **kwargs: Any) -> AiohttpSender:
        values: dict[str, Any] = {"timeout_s": 2.0, "max_response_bytes": 16}
        values.update(kwargs)
        sender = AiohttpSender(policy, **values)
        await sender.start()
        made.append(sender)
        return sender

    yield factory
    for sender in made:
        await sender.close()


def signed(url: str, secret: str) -> WebhookRequest:
    return WebhookRequest(url, signed_headers([secret], "evt_1", int(time.time()), BODY), BODY)


async def test_a_signed_post_reaches_the_receiver_and_verifies(
    receiver: Any, make_sender: Any
) -> None:
    secret = generate_secret()
    url = receiver.script("/ok", (202, {"X-Any": "1"}))
    receiver.trust("/ok", secret)
    result = await (await make_sender()).send(signed(url, secret))
    assert result.status_code == 202
    assert result.error is None
    (got,) = receiver.requests
    assert got.verified_by == [0]
    assert got.body == BODY
    assert got.headers["Content-Type"] == "application/json"


async def test_the_response_body_is_truncated(receiver: Any, make_sender: Any) -> None:
    url = receiver.script("/err", 500)
    result = await (await make_sender(max_response_bytes=6)).send(signed(url, generate_secret()))
    assert result.status_code == 500
    assert result.body == "answer"


async def test_a_redirect_is_not_followed(receiver: Any, make_sender: Any) -> None:
    url = receiver.script("/moved", "redirect")
    result = await (await make_sender()).send(signed(url, generate_secret()))
    assert result.status_code == 302
    assert receiver.to("/redirect-target") == []


async def test_a_receiver_slower_than_the_timeout_is_a_timeout(
    receiver: Any, make_sender: Any
) -> None:
    url = receiver.script("/slow", "slow")
    result = await (await make_sender(timeout_s=0.2)).send(signed(url, generate_secret()))
    assert result.status_code is None
    assert result.error_kind == "timeout"


async def test_loopback_is_refused_without_an_allow_list(receiver: Any, make_sender: Any) -> None:
    url = receiver.script("/never", 200)
    result = await (await make_sender(AddressPolicy())).send(signed(url, generate_secret()))
    assert result.error_kind == "blocked"
    assert "loopback" in (result.error or "")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "addresses",
    [("10.0.0.7",), ("169.254.169.254",), ("100.64.3.4",), ("fd00::1",), ("::ffff:10.1.1.1",)],
)
async def test_a_name_resolving_to_refused_addresses_is_refused_before_any_connect(
    addresses: tuple[str, ...], make_sender: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = FixedResolver(*addresses)
    connects: list[Any] = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: connects.append(a))
    sender = await make_sender(resolver=resolver)
    result = await sender.send(signed("https://hooks.example.test/in", generate_secret()))
    assert resolver.asked == ["hooks.example.test"]
    assert result.error_kind == "blocked"
    assert connects == []


async def test_refused_answers_are_dropped_and_only_permitted_ones_dialled(
    receiver: Any, make_sender: Any
) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    receiver.script("/mixed", 200)
    sender = await make_sender(resolver=FixedResolver("10.0.0.7", "127.0.0.1"))
    result = await sender.send(signed(f"http://hooks.example.test:{port}/mixed", generate_secret()))
    assert result.status_code == 200
    assert len(receiver.to("/mixed")) == 1


async def test_the_guarded_resolver_raises_a_blocked_address() -> None:
    resolver = GuardedResolver(AddressPolicy(), FixedResolver("192.168.0.1"))
    with pytest.raises(BlockedAddress, match="private"):
        await resolver.resolve("intranet.example.test", 443)


@pytest.mark.parametrize(
    ("family", "sockaddr"),
    [
        (socket.AF_INET, ("10.0.0.1", 80)),
        (socket.AF_INET, ("169.254.169.254", 80)),
        (socket.AF_INET6, ("::1", 80, 0, 0)),
        (socket.AF_INET6, ("fe80::1", 80, 0, 2)),
    ],
)
def test_the_socket_factory_refuses_to_make_a_socket_for_a_refused_address(
    family: int, sockaddr: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []
    monkeypatch.setattr(socket, "socket", lambda *a, **k: made.append(a) or None)
    factory = guarded_socket_factory(LOOPBACK)
    with pytest.raises(BlockedAddress):
        factory((family, socket.SOCK_STREAM, 6, "", sockaddr))
    assert made == []


async def test_an_ip_literal_bypassing_the_resolver_is_stopped_by_the_socket_factory(
    make_sender: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[Any] = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: connects.append(a))
    resolver = FixedResolver()
    sender = await make_sender(resolver=resolver)
    result = await sender.send(signed("http://10.9.8.7:8080/in", generate_secret()))
    assert resolver.asked == []  # aiohttp does not resolve literals: the factory is the guard
    assert result.error_kind == "blocked"
    assert connects == []


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f000001", "127.1", "127.0.0.1."])
async def test_a_non_canonical_ipv4_host_is_refused_before_it_is_resolved(
    host: str, make_sender: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint stored before registration refused these: the system resolver would read
    the host as 127.0.0.1, which the allow-list here permits, so judging the answer is not
    enough; the spelling itself is refused and nothing is resolved or dialled. aiohttp
    refuses the all-decimal forms itself (``invalid_url``), the guarded resolver the rest
    (``blocked``)."""
    resolver = FixedResolver("127.0.0.1")
    connects: list[Any] = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: connects.append(a))
    sender = await make_sender(LOOPBACK, resolver=resolver)
    result = await sender.send(signed(f"http://{host}:8080/in", generate_secret()))
    assert result.error_kind in ("blocked", "invalid_url")
    assert "canonical" in (result.error or "")
    assert resolver.asked == []
    assert connects == []


async def test_full_width_digits_become_a_literal_that_the_socket_factory_judges(
    make_sender: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's URL library folds full-width digits and dots into 127.0.0.1 (an IP literal,
    never resolved): the socket factory refuses it without the allow-list."""
    resolver = FixedResolver()
    connects: list[Any] = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: connects.append(a))
    sender = await make_sender(AddressPolicy(), resolver=resolver)
    url = "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11:8080/in"
    result = await sender.send(signed(url, generate_secret()))
    assert result.error_kind == "blocked"
    assert "loopback" in (result.error or "")
    assert resolver.asked == []
    assert connects == []
