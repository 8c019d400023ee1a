"""What an endpoint URL may be: absolute http(s), a host, no credentials, no fragment.

A host that is an IP literal is judged by the SSRF policy at once, so that an
obviously internal URL is refused when it is registered; a host name is judged
on every connection instead (DNS can change). A host that spells an IPv4 address
any other way than ``a.b.c.d`` (decimal, octal, hex, shortened, percent-encoded,
full-width, with a trailing dot) is refused outright, as is a percent-encoded host:
no DNS name has a ``%``, and such hosts are read differently by different parsers.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

from riverbed.errors import RiverbedError
from riverbed_webhooks.domain.addresses import AddressPolicy, non_canonical_ipv4

MAX_URL_LENGTH: Final = 2048  # characters


class InvalidUrl(RiverbedError, ValueError):
    pass


def _host_name(url: str, host: str) -> str:
    """``url`` if its ``host`` (not an IP literal) may be resolved as a name."""
    spelling = non_canonical_ipv4(host)
    if spelling is not None:
        raise InvalidUrl(
            f"the URL's host {spelling}; IPv4 addresses are accepted as four decimal numbers "
            "only, and only public ones"
        )
    if "%" in host:
        raise InvalidUrl("the URL's host must not be percent-encoded: write it as is")
    return url


def validate_url(url: str, policy: AddressPolicy) -> str:
    """``url`` if an endpoint may have it; InvalidUrl saying what is accepted otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        # URL parsers drop or keep such characters each their own way (urlsplit strips
        # leading ones), so the URL checked here could differ from the one requested
        raise InvalidUrl("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidUrl(f"not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidUrl("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise InvalidUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("credentials in the URL are not accepted; authenticate by signature")
    if parts.fragment:
        raise InvalidUrl("the URL must not have a #fragment")
    if port == 0:
        raise InvalidUrl("port 0 is not a port")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return _host_name(url, parts.hostname)
    reason = policy.reason_to_refuse(literal)
    if reason is not None:
        raise InvalidUrl(f"the URL's address {literal} is {reason}; only public addresses")
    return url
