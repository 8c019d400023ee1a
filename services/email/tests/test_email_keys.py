"""The email service's keys: a domain's rate and slow-down state share one hash tag, so one
script may read and write both in Redis Cluster."""

from __future__ import annotations

from riverbed_email import keys


def _slot_tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


def test_a_domains_rate_and_slowdown_keys_share_one_hash_tag() -> None:
    rate = keys.email_domain_rate_key("example.org")
    slowdown = keys.email_domain_slowdown_key("example.org")
    assert rate == "rb:email:rate:{example.org}"
    assert _slot_tag(rate) == _slot_tag(slowdown) == "example.org"


def test_per_request_keys_are_named_by_the_request_event_id() -> None:
    assert keys.email_sent_key("e1") == "rb:email:sent:e1"
    assert keys.email_failed_key("e1") == "rb:email:failed:e1"
    assert keys.email_sending_key("e1") == "rb:email:sending:e1"
