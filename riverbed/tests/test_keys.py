"""Key names: one hash tag per stream family, clear errors for names that would break it."""

from __future__ import annotations

import pytest

from riverbed import keys


def _slot_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the text between the first { and }."""
    return key[key.index("{") + 1 : key.index("}")]


def test_every_key_of_a_stream_family_shares_one_hash_tag() -> None:
    family = [
        keys.stream_key("email.requested"),
        keys.dead_letter_key("email.requested"),
        keys.delay_key("email.requested"),
        keys.idempotency_key("email.requested", "email"),
    ]
    assert {_slot_tag(k) for k in family} == {"email.requested"}
    assert family[0] == "rb:{email.requested}:stream"
    assert family[1] == "rb:{email.requested}:dlq"


def test_the_logical_stream_can_be_read_back_from_a_key() -> None:
    assert keys.logical_stream_of("rb:{payment.succeeded}:stream") == "payment.succeeded"
    with pytest.raises(ValueError, match="not a Riverbed stream key"):
        keys.logical_stream_of("other:key")


@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "a:b", "has space"])
def test_stream_names_that_would_break_the_key_layout_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid logical stream name"):
        keys.stream_key(bad)


def test_an_owner_key_starts_with_its_prefix_and_carries_its_hash_tag() -> None:
    prefix = keys.owner_prefix("email")
    assert prefix == "rb:email:"
    assert keys.owned_key(prefix, "rate", keys.hash_tag("example.org")) == (
        "rb:email:rate:{example.org}"
    )
    assert _slot_tag(keys.owned_key(prefix, "idem", keys.hash_tag("a"), "b")) == "a"


@pytest.mark.parametrize("bad", ["", "Email", "a:b", "a{b", "cache", "schedules", "schedulesx"])
def test_owner_names_that_would_overlap_another_owners_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid key owner"):
        keys.owner_prefix(bad)
