"""The wire format as another language sees it: redis-cli and a plain JSON parser."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from riverbed import keys
from riverbed.testing import redis_cli_args, sync_redis_client
from riverbed_contracts import SendEmail, event_from_entry, new_event, validate_data

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs the redis-cli binary"),
]


@pytest.fixture
def stream_key(redis_url: str, unique: str) -> Iterator[str]:
    key = keys.stream_key(f"test.contracts.{unique}")
    yield key
    client = sync_redis_client(redis_url)
    client.delete(key)
    client.close()


def redis_cli(url: str, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", *redis_cli_args(url), "--raw", *args],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout.decode("utf-8")


def test_an_event_written_by_python_is_plain_cloudevents_json_to_redis_cli(
    redis_url: str, stream_key: str
) -> None:
    payload = SendEmail(to="ada@example.com", template="welcome", variables={"name": "Adà"})
    event = new_event(payload, subject="user/42", correlationid="req-7")
    client: Any = sync_redis_client(redis_url)  # redis-py's stubs type replies loosely
    try:
        entry_id = client.xadd(stream_key, event.to_entry())
    finally:
        client.close()

    lines = redis_cli(redis_url, "XRANGE", stream_key, "-", "+").splitlines()

    assert lines[:2] == [entry_id.decode(), "event"]
    assert len(lines) == 3, "one entry, one field"
    document = json.loads(lines[2])
    assert document == {
        "specversion": "1.0",
        "id": event.id,
        "source": "urn:riverbed",
        "type": "email.requested.v1",
        "time": document["time"],
        "subject": "user/42",
        "datacontenttype": "application/json",
        "correlationid": "req-7",
        "data": {
            "to": "ada@example.com",
            "category": "transactional",
            "template": "welcome",
            "variables": {"name": "Adà"},
        },
    }
    assert datetime.fromisoformat(document["time"]) == event.time


def test_an_event_written_by_redis_cli_reads_back_as_a_typed_payload(
    redis_url: str, stream_key: str
) -> None:
    document = {
        "specversion": "1.0",
        "id": "ext-1",
        "source": "urn:other-team",
        "type": "email.requested.v1",
        "time": "2024-05-01T12:00:00+02:00",
        "data": {"to": "ada@example.com", "subject": "Hi", "text": "Hello"},
        "tracestate": "vendor=1",
    }
    redis_cli(redis_url, "XADD", stream_key, "*", "event", json.dumps(document))

    client: Any = sync_redis_client(redis_url)  # redis-py's stubs type replies loosely
    try:
        ((_, fields),) = client.xrange(stream_key)
    finally:
        client.close()
    event = event_from_entry(fields)
    assert (event.id, event.source, event.model_extra) == (
        "ext-1",
        "urn:other-team",
        {"tracestate": "vendor=1"},
    )
    assert validate_data(event) == SendEmail(to="ada@example.com", subject="Hi", text="Hello")
