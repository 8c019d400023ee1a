"""Riverbed webhooks service."""

from typing import Final

from riverbed_contracts.registry import service_source

#: the CloudEvents ``source`` of every event this service publishes: consumers of its
#: internal types (``webhook.delivery.requested.v1``) trust no other
SOURCE: Final = service_source("webhooks")
