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
