"""The envelope: CloudEvents attributes and their one-field stream entry."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from riverbed_contracts import ENTRY_FIELD, CloudEvent, EntryDecodeError, event_from_entry

DATA = {"to": "ada@example.com", "template": "welcome", "variables": {"name": "Adà"}}


def make_event(**attributes: Any) -> CloudEvent:
    return CloudEvent(type="email.requested.v1", data=DATA, **attributes)


def test_an_entry_has_exactly_the_event_field_holding_the_json_document() -> None:
    event = make_event()
    entry = event.to_entry()
    assert list(entry) == [ENTRY_FIELD] == ["event"]
    assert json.loads(entry["event"]) == json.loads(event.to_json())


def test_round_trip_through_an_entry_with_str_keys() -> None:
    event = make_event(subject="user/42", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert event_from_entry(event.to_entry()) == event


def test_round_trip_through_an_entry_with_bytes_keys_and_values_as_redis_py_returns_them() -> None:
    event = make_event()
    raw = {key.encode(): value.encode() for key, value in event.to_entry().items()}
    assert event_from_entry(raw) == event


def test_the_document_omits_absent_optional_attributes_and_has_the_required_ones() -> None:
    document = json.loads(make_event().to_json())
    assert set(document) == {
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "datacontenttype",
        "data",
    }
    assert document["specversion"] == "1.0"
    assert document["datacontenttype"] == "application/json"
    assert datetime.fromisoformat(document["time"]).utcoffset() is not None


def test_other_entry_fields_are_ignored() -> None:
    event = make_event()
    assert event_from_entry({**event.to_entry(), "later": "x"}) == event


def test_an_entry_without_the_event_field_is_refused_naming_its_fields() -> None:
    with pytest.raises(EntryDecodeError, match=r"no 'event' field \(fields: \['body', 'type'\]\)"):
        event_from_entry({b"type": b"x", b"body": b"{}"})


@pytest.mark.parametrize(
    "value",
    [b"not json", b"\xff\xfe", b"[1, 2]", b'{"type": "email.sent.v1"}', b'{"specversion": "0.3"}'],
)
def test_an_event_field_that_is_not_a_cloudevent_is_refused(value: bytes) -> None:
    with pytest.raises(EntryDecodeError, match=r"not a CloudEvents 1\.0 JSON document"):
        event_from_entry({b"event": value})


def test_a_time_without_offset_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        make_event(time=datetime(2024, 5, 1, 12, 0))


def test_unknown_extension_attributes_are_kept_for_forward_compatibility() -> None:
    document = json.loads(make_event(tracestate="rojo=00f067aa0ba902b7").to_json())
    event = event_from_entry({"event": json.dumps(document)})
    assert event.model_extra == {"tracestate": "rojo=00f067aa0ba902b7"}
    assert json.loads(event.to_json()) == document


def test_extension_attribute_names_must_be_lowercase_alphanumeric() -> None:
    with pytest.raises(
        ValidationError, match=r"invalid CloudEvents attribute name\(s\) \['traceId'\]"
    ):
        make_event(traceId="x")


def test_a_caused_event_carries_the_correlation_and_its_cause() -> None:
    first = make_event(traceparent="00-" + "c" * 32 + "-" + "d" * 16 + "-01")
    second = first.caused("email.sent.v1", {"x": 1})
    third = second.caused("email.sent.v1", {"x": 2})
    assert (second.correlationid, second.causationid) == (first.id, first.id)
    assert (third.correlationid, third.causationid) == (first.id, second.id)
    assert third.traceparent == first.traceparent
    assert len({first.id, second.id, third.id}) == 3


def test_new_event_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from riverbed_contracts.envelope import new_event_id

    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text  # canonical: lowercase, hyphens at 8-4-4-4-12
