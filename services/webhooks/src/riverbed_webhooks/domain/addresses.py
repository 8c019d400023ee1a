"""The SSRF guard's judgement of an IP address: may a webhook connect to it?

Refused: loopback, private (RFC 1918, IPv6 unique-local), link-local (169.254.0.0/16
and fe80::/10, which hold cloud metadata services), CGNAT (100.64.0.0/10),
multicast, reserved, unspecified, and anything else not globally routable
(documentation, benchmarking, site-local…), IPv4 and IPv6 alike. IPv6 forms that
carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``,
6to4 ``2002::/16``, Teredo) are judged by the IPv4 address they reach.

The allow-list (networks from settings) wins over every rule: tests and
``make run`` allow ``127.0.0.1/32`` so that receivers on loopback can be reached.
This module only judges; :mod:`riverbed_webhooks.adapters.http_sender` enforces
the judgement on every address at connect time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
NAT64: Final = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class BlockedAddress(OSError):
    """A connection to an address the SSRF guard refuses (an OSError, as connect errors are)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"refused by the SSRF guard: {address} is {reason}")
        self.address = address
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, for the transition forms that have one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): traffic goes to the client
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why connecting to ``address`` is refused, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal_reason(embedded)
            return f"{inner} (embedded in {address})" if inner else None
        if address.scope_id:
            return "scoped (link-local)"
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (isinstance(address, ipaddress.IPv4Address) and address in CGNAT, "CGNAT (shared)"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Allow-list entries (``127.0.0.1/32``, ``::1``, ``10.1.2.0/24``) as networks."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


@dataclass(frozen=True)
class AddressPolicy:
    """The guard's rule: refuse every non-public address unless it is in ``allow``."""

    allow: tuple[IPNetwork, ...] = field(default_factory=tuple)

    def check(self, address: str | IPAddress) -> None:
        """Raise :class:`BlockedAddress` unless a connection to ``address`` is permitted."""
        reason = self.reason_to_refuse(address)
        if reason is not None:
            raise BlockedAddress(str(address), reason)

    def reason_to_refuse(self, address: str | IPAddress) -> str | None:
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return "not an IP address"
        if any(ip.version == net.version and ip in net for net in self.allow):
            return None
        return refusal_reason(ip)

    def permits(self, address: str | IPAddress) -> bool:
        return self.reason_to_refuse(address) is None
