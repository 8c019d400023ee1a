"""The SSRF guard: which addresses are refused, the allow-list, and URL checks at registration."""

from __future__ import annotations

import ipaddress

import pytest

from riverbed_webhooks.domain.addresses import (
    AddressPolicy,
    BlockedAddress,
    non_canonical_ipv4,
    parse_networks,
    refusal_reason,
)
from riverbed_webhooks.domain.urls import InvalidUrl, validate_url

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "CGNAT",
    "100.127.255.254": "CGNAT",
    "224.0.0.251": "multicast",
    "0.0.0.0": "unspecified",
    "240.0.0.1": "",
    "192.0.2.10": "",  # documentation
    "198.18.0.1": "",  # benchmarking
    "255.255.255.255": "",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "fec0::1": "",
    "2001:db8::1": "",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "link-local",
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
    "2002:0a00:0001::": "private",  # 6to4 of 10.0.0.1
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None
    assert AddressPolicy().permits(address)


def test_the_allow_list_lets_exactly_its_networks_through() -> None:
    policy = AddressPolicy(parse_networks(["127.0.0.1/32", "::1"]))
    assert policy.permits("127.0.0.1")
    assert policy.permits("::1")
    assert not policy.permits("127.0.0.2")
    assert not policy.permits("10.0.0.1")
    with pytest.raises(BlockedAddress, match="loopback"):
        policy.check("127.0.0.2")


def test_a_blocked_address_is_an_os_error_as_connect_errors_are() -> None:
    assert isinstance(BlockedAddress("10.0.0.1", "private"), OSError)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "https://"),
        ("example.com/hook", "https://"),
        ("https:///path", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("https://example.com:99999/", "valid URL"),
        ("https://example.com/" + "a" * 3000, "longer"),
    ],
)
def test_urls_refused_at_registration_say_why(url: str, why: str) -> None:
    with pytest.raises(InvalidUrl, match=why):
        validate_url(url, AddressPolicy())


def test_urls_with_host_names_or_allowed_literals_are_accepted() -> None:
    assert validate_url("https://hooks.example.com/in", AddressPolicy())
    allow_loopback = AddressPolicy(parse_networks(["127.0.0.1/32"]))
    assert validate_url("http://127.0.0.1:9/hook", allow_loopback)


#: IPv4 addresses spelt as resolvers and URL parsers read them, and what they spell
NON_CANONICAL = {
    "2130706433": "127.0.0.1",  # one decimal number
    "0177.0.0.1": "127.0.0.1",  # octal part
    "0x7f000001": "127.0.0.1",  # one hex number
    "0X7F.0.0.1": "127.0.0.1",  # hex part, upper case
    "127.1": "127.0.0.1",  # two parts: the last fills three bytes
    "10.1": "10.0.0.1",
    "192.168.257": "192.168.1.1",  # three parts: the last fills two bytes
    "127%2E0%2E0%2E1": "127.0.0.1",  # percent-encoded dots
    "%31%32%37.0.0.1": "127.0.0.1",  # percent-encoded digits
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11": "127.0.0.1",  # full-width digits
    "127\uff0e0\uff0e0\uff0e1": "127.0.0.1",  # full-width dots
    "169\u3002254\u3002169\u3002254": "169.254.169.254",  # ideographic full stops
    "127.0.0.1.": "127.0.0.1",  # trailing (root) dot
    "134744072": "8.8.8.8",  # public, but still not the canonical spelling
}


@pytest.mark.parametrize(("host", "address"), NON_CANONICAL.items())
def test_non_canonical_ipv4_spellings_are_refused_at_registration_naming_the_address(
    host: str, address: str
) -> None:
    found = non_canonical_ipv4(host.lower())
    assert found is not None
    assert f"write it as {address}" in found
    # refused even where the allow-list lets the address through: one spelling only
    allow_all = AddressPolicy(parse_networks(["0.0.0.0/0"]))
    for policy in (AddressPolicy(), allow_all):
        with pytest.raises(InvalidUrl, match="non-canonical"):
            validate_url(f"http://{host}:8080/hook", policy)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "1.2.3.256", "08.1.2.3", "x.0x"])
def test_a_host_ending_in_a_number_that_is_no_address_is_refused(host: str) -> None:
    with pytest.raises(InvalidUrl, match="ends in a number"):
        validate_url(f"https://{host}/hook", AddressPolicy(parse_networks(["0.0.0.0/0"])))


@pytest.mark.parametrize(
    "host", ["hooks.example.com", "example.com.", "123.example", "b\u00fccher.example", "8.8.8.8"]
)
def test_host_names_and_canonical_addresses_are_not_numeric_spellings(host: str) -> None:
    assert non_canonical_ipv4(host) is None
    assert validate_url(f"https://{host}/hook", AddressPolicy())


def test_a_percent_encoded_host_name_is_refused() -> None:
    with pytest.raises(InvalidUrl, match="percent-encoded"):
        validate_url("https://ex%61mple.com/hook", AddressPolicy())


@pytest.mark.parametrize(
    "url",
    [
        " https://a.example/",
        "https://a.example/ x",
        "https://a.example/\x00",
        "https://a.ex\tample/",
    ],
)
def test_a_url_with_spaces_or_control_characters_is_refused(url: str) -> None:
    """urlsplit strips some of them and aiohttp would send others: the URL checked would not
    be the URL requested."""
    with pytest.raises(InvalidUrl, match="spaces or control"):
        validate_url(url, AddressPolicy())
