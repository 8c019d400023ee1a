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

A host that is an IPv4 address spelt any way but the canonical dotted decimal
(``2130706433``, ``0177.0.0.1``, ``0x7f000001``, ``127.1``, ``10.1``, percent-encoded,
full-width digits or dots, a trailing dot) is refused whatever address it spells
(:func:`non_canonical_ipv4`): resolvers (``inet_aton``, ``getaddrinfo``) and URL
libraries read these forms as addresses, each its own way, so a check that reads them
as a name, or another way, would judge another address than the one dialled.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from riverbed.errors import RiverbedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
NAT64: Final = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class BlockedAddress(RiverbedError, OSError):
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


#: label separators IDNA (UTS #46) reads as ".": ideographic, full-width, half-width full stop
_DOTS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
#: a label that makes a host an IPv4 address to URL parsers (WHATWG "ends in a number") and
#: to inet_aton: decimal digits, or 0x and hex digits
_NUMBER: Final = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def _as_read(host: str) -> str:
    """``host`` as a resolver or URL library may read it: percent-escapes decoded,
    compatibility characters folded (full-width digits and dots, NFKC, as IDNA does),
    lower case, without the root's trailing dot."""
    read = unicodedata.normalize("NFKC", unquote(host)).translate(_DOTS).lower()
    return read[:-1] if read.endswith(".") else read


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The address inet_aton (and the WHATWG URL parser) read in ``text``: one to four
    parts, each decimal, octal (leading 0) or hex (0x), the last filling the bytes left."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if not _NUMBER.match(part):
            return None
        if part.startswith("0x"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def non_canonical_ipv4(host: str) -> str | None:
    """Why ``host`` (as written in a URL) is refused as a spelling of an IPv4 address, or
    None: a host name (its last label is not a number), or the canonical ``a.b.c.d``."""
    read = _as_read(host)
    if not _NUMBER.match(read.rsplit(".", 1)[-1]):
        return None  # a host name: a top-level domain is never a number
    if host == read:
        try:
            if str(ipaddress.IPv4Address(host)) == host:
                return None
        except ValueError:
            pass
    address = _inet_aton(read)
    if address is None:
        return f"{host!r} ends in a number but is no IPv4 address"
    return (
        f"{host!r} spells the IPv4 address {address} in a non-canonical form "
        f"(write it as {address})"
    )


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
