"""Per-endpoint metric labels stay bounded."""

from __future__ import annotations

from riverbed_webhooks.metrics import OTHER, EndpointLabels


def test_the_first_endpoints_get_their_own_label_and_the_rest_share_other() -> None:
    label = EndpointLabels(limit=2)
    assert label("a") == "a"
    assert label("b") == "b"
    assert label("c") == OTHER
    assert label("a") == "a"
    assert label("d") == OTHER


def test_a_limit_of_zero_labels_every_endpoint_other() -> None:
    assert EndpointLabels(limit=0)("a") == OTHER
