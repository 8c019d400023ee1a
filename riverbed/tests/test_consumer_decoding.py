"""Reading an event's id before its document is parsed, and what the consumer does when
the two disagree."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.consumer import Message
from riverbed.consumer.decoding import event_when_handled, plain_ids_json, sniffed_event_id
from riverbed.publisher import Publisher
from riverbed.testing import ConsumerFactory, make_event, wait_for
from riverbed_contracts import CloudEvent, EntryDecodeError


@pytest.mark.parametrize(
    ("document", "sniffed"),
    [
        (b'{"id":"abc-1","type":"t.v1"}', "abc-1"),
        ('{"id":"caf\u00e9","type":"t.v1"}'.encode(), "caf\u00e9"),  # UTF-8 as it is
        (b'{"type":"t.v1","id":"abc-1"}', None),  # not first: the parser reads it
        (b'{ "id":"abc-1"}', None),  # spaced: the parser reads it
        (b'{"id":"a\\"b","type":"t.v1"}', None),  # an escape: only the parser knows
        (b'{"id":"caf\\u00e9"}', None),
        (b'{"id":""}', None),
        (b'{"id":"unterminated', None),
        (b'{"id":"\xff\xfe"}', None),  # not UTF-8
        (b'{"id":"a\x01b"}', None),  # a control character: the parser refuses it
        (b"", None),
    ],
)
def test_an_id_is_read_off_the_document_only_when_it_is_plainly_first(
    document: bytes, sniffed: str | None
) -> None:
    assert sniffed_event_id(document) == sniffed


def test_sniffed_ids_make_json_without_an_encoder() -> None:
    ids = [sniffed_event_id(f'{{"id":"{i}"}}'.encode()) for i in ("a-1", "caf\u00e9", "x y")]
    assert None not in ids
    plain = [i for i in ids if i is not None]
    assert json.loads(plain_ids_json(plain)) == plain
    assert json.loads(plain_ids_json([])) == []


def test_what_riverbed_writes_has_its_id_read_off_and_the_parse_agrees() -> None:
    event = make_event(1)
    fields = {b"event": event.to_json().encode()}
    sniffed = sniffed_event_id(fields[b"event"])
    assert sniffed == event.id
    assert event_when_handled(fields, sniffed) == event


def test_a_document_naming_its_id_twice_has_no_one_id() -> None:
    event = make_event(1)
    fields = {b"event": (event.to_json()[:-1] + ',"id":"second"}').encode()}
    assert json.loads(fields[b"event"])["id"] == "second"  # a last-wins parser's reading
    sniffed = sniffed_event_id(fields[b"event"])
    assert sniffed == event.id
    error = event_when_handled(fields, sniffed)
    assert isinstance(error, EntryDecodeError)
    assert "more than once" in str(error)


@pytest.mark.integration
async def test_an_entry_naming_its_id_twice_is_dead_lettered_and_the_rest_handled(
    start_consumer: ConsumerFactory,
    publisher: Publisher,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    """The id read off the document is the one checked against the idempotency set; a
    parser that kept the other id would check one event and handle another."""
    stream = f"t.{unique}"
    first = make_event(1)
    twice = first.to_json()[:-1] + ',"id":"someone-else"}'
    await redis_client.xadd(keys.stream_key(stream), {"event": twice})
    await publisher.publish(make_event(2), stream=stream)
    handled: list[CloudEvent] = []

    async def handler(message: Message[Any]) -> None:
        handled.append(message.event)

    start_consumer(stream, handler)
    await wait_for(lambda: len(handled) == 1, what="the well-formed event handled")
    await wait_for(
        lambda: _dead_letters(redis_client, stream), what="the twice-named one dead-lettered"
    )
    [dead] = await _dead_letters(redis_client, stream)
    assert dead[b"reason"] == b"undecodable"
    assert b"more than once" in dead[b"error_message"]
    assert handled[0].data == make_event(2).data


async def _dead_letters(client: redis.asyncio.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await client.xrange(keys.dead_letter_key(stream))]
