"""Every exception class the service defines is a RiverbedError, and keeps the built-in
kind callers catch it as (a ValueError, a LookupError, an OSError for connect errors)."""

from __future__ import annotations

import pytest

from riverbed.errors import RiverbedError
from riverbed_webhooks.domain.addresses import BlockedAddress
from riverbed_webhooks.domain.matching import InvalidFilter
from riverbed_webhooks.domain.signing import InvalidSecret
from riverbed_webhooks.domain.urls import InvalidUrl
from riverbed_webhooks.service_layer.errors import Conflict, Invalid, NotFound


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (BlockedAddress, OSError),
        (InvalidFilter, ValueError),
        (InvalidSecret, ValueError),
        (InvalidUrl, ValueError),
        (Invalid, ValueError),
        (NotFound, LookupError),
        (Conflict, Exception),
    ],
)
def test_each_error_is_a_riverbed_error_of_its_old_kind(error: type, kind: type) -> None:
    assert issubclass(error, RiverbedError)
    assert issubclass(error, kind)
