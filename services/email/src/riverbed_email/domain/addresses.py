"""Recipient addresses as the suppression list, rate limits and metrics see them."""

from __future__ import annotations


def normalize(address: str) -> str:
    """The form an address is suppressed under: trimmed and lowercased.

    RFC 5321 lets the local part be case-sensitive, but no mailbox provider in use
    treats ``Ada@`` and ``ada@`` as two people, and one suppression must cover both.
    """
    return address.strip().lower()


def domain_of(address: str) -> str:
    """The recipient domain (lowercase), the unit of rate limits and slow-downs."""
    return normalize(address).rpartition("@")[2]


class DomainLabels:
    """Metric label of a domain: itself when tracked, else ``other`` (bounded cardinality)."""

    OTHER = "other"

    def __init__(self, tracked: list[str] | tuple[str, ...]) -> None:
        self._tracked = frozenset(domain.lower() for domain in tracked)

    def __call__(self, domain: str) -> str:
        return domain if domain in self._tracked else self.OTHER
