"""Riverbed payments service."""

from typing import Final

from riverbed_contracts.registry import service_source

#: the CloudEvents ``source`` of every event this service publishes (ledger events,
#: receipts, reconciliation findings): consumers of its internal types trust no other
SOURCE: Final = service_source("payments")
