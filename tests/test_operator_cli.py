"""The operator CLI (`riverbed …`) against a real Redis, with entries a real consumer wrote.

Dead-lettered entries come from the runtime's own consumer (a handler raising
``PermanentError``, an entry that is no CloudEvent), so the CLI reads exactly what
production writes. Each test works on streams named with its own random token.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.cli import main, parse_when
from riverbed.consumer import Message
from riverbed.errors import PermanentError
from riverbed.publisher import Publisher
from riverbed.testing import ConsumerFactory, free_port, make_event, wait_for
from riverbed_contracts import CloudEvent
from riverbed_contracts.envelope import event_from_entry

pytestmark = pytest.mark.integration

Cli = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def cli(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``riverbed ARGS…`` in-process (in a thread: it runs its own event loop).

    Its output is kept apart from the consumer's logs, which share this process.
    """
    monkeypatch.setenv("COLUMNS", "200")  # rich's width off a terminal: tables unwrapped

    async def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            main, ["--redis-url", redis_url, *argv], stdout=out, stderr=err
        )
        return code, out.getvalue(), err.getvalue()

    return run


def failed_payment(n: int) -> CloudEvent:
    data = {
        "provider": "stripe",
        "provider_payment_id": f"pi_f{n:05d}",
        "amount": 500 + n,
        "currency": "EUR",
        "failure_code": "card_declined",
    }
    return CloudEvent(type="payment.failed.v1", data=data, source="urn:riverbed:test")


class Scenario:
    """A stream whose consumer group dead-lettered three entries and handled one."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.refused = make_event(1)  # payment.succeeded: PermanentError "amount mismatch"
        self.declined = failed_payment(2)  # payment.failed: PermanentError "unknown account"
        self.fine = make_event(3)
        self.accept_all = False
        self.handled: list[str] = []

    async def handler(self, message: Message[Any]) -> None:
        if not self.accept_all:
            if message.event.id == self.refused.id:
                raise PermanentError("amount mismatch")
            if message.event.id == self.declined.id:
                raise PermanentError("unknown account")
        self.handled.append(message.event.id)


@pytest.fixture
async def scenario(
    redis_client: redis.asyncio.Redis, start_consumer: ConsumerFactory, unique: str
) -> Scenario:
    s = Scenario(f"ops.{unique}")
    await Publisher(redis_client).publish_many([s.refused, s.declined, s.fine], stream=s.stream)
    # an entry that is not a Riverbed event at all: dead-lettered as undecodable
    await redis_client.xadd(keys.stream_key(s.stream), {"payload": "not an event"})
    start_consumer(s.stream, s.handler, group="ledger", name="pod-a")
    dlq = keys.dead_letter_key(s.stream)
    await wait_for(lambda: _length_is(redis_client, dlq, 3), what="three entries dead-lettered")
    await wait_for(lambda: s.fine.id in s.handled, what="the good event handled")
    return s


async def _length_is(client: redis.asyncio.Redis, key: str, expected: int) -> bool:
    return int(await client.xlen(key)) == expected


async def test_dlq_list_shows_what_the_consumer_recorded_and_filters_it(
    cli: Cli, scenario: Scenario
) -> None:
    code, out, _ = await cli("dlq", "list", scenario.stream, "--json")
    assert code == 0
    listing = json.loads(out)
    assert listing["matched"] == 3
    by_reason = {e["reason"]: e for e in listing["entries"]}
    assert set(by_reason) == {"permanent", "undecodable"}
    assert len(listing["entries"]) == 3
    permanent = [e for e in listing["entries"] if e["reason"] == "permanent"]
    assert {e["event"]["id"] for e in permanent} == {scenario.refused.id, scenario.declined.id}
    assert all(e["group"] == "ledger" and e["error_type"] == "PermanentError" for e in permanent)
    assert "decode_error" in by_reason["undecodable"]

    async def ids(*filters: str) -> set[str]:
        code, out, err = await cli("dlq", "list", scenario.stream, "--json", *filters)
        assert code == 0, err
        return {
            e["event"]["id"] if isinstance(e["event"], dict) else "?"
            for e in json.loads(out)["entries"]
        }

    assert await ids("--type", "payment.failed.*") == {scenario.declined.id}
    assert await ids("--type", "payment.*") == {scenario.refused.id, scenario.declined.id}
    assert await ids("--error", "MISMATCH") == {scenario.refused.id}
    assert await ids("--reason", "undecodable") == {"?"}
    assert len(await ids("--since", "1h")) == 3
    assert await ids("--until", "1h") == set()

    code, out, _ = await cli("dlq", "list", scenario.stream)  # the table, for people
    assert code == 0
    assert "amount mismatch" in out
    assert "3 matching" in out


async def test_replay_dry_run_changes_nothing_then_replay_is_consumed_again(
    cli: Cli, scenario: Scenario, redis_client: redis.asyncio.Redis
) -> None:
    stream_key, dlq = keys.stream_key(scenario.stream), keys.dead_letter_key(scenario.stream)
    length_before = await redis_client.xlen(stream_key)

    code, out, _ = await cli(
        "dlq", "replay", scenario.stream, "--all", "--type", "payment.succeeded.v1", "--dry-run",
        "--json",
    )  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["dry_run"] is True
    assert len(report["would_replay"]) == 1
    assert report["replayed"] == []
    assert await redis_client.xlen(dlq) == 3
    assert await redis_client.xlen(stream_key) == length_before

    scenario.accept_all = True  # the bug that refused it is "fixed"
    code, out, _ = await cli(
        "dlq", "replay", scenario.stream, "--all", "--type", "payment.succeeded.v1", "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert [r["event_id"] for r in report["replayed"]] == [scenario.refused.id]
    await wait_for(
        lambda: scenario.refused.id in scenario.handled, what="the replayed event handled"
    )
    assert await redis_client.xlen(dlq) == 2
    # the replayed entry is the original event, unchanged, in the wire format
    new_entry = await redis_client.xrange(stream_key, min=report["replayed"][0]["entry_id"])
    assert event_from_entry(new_entry[0][1]) == scenario.refused
    # meant for the group it failed in: other groups of the stream acknowledge it unhandled
    assert new_entry[0][1][b"group"] == b"ledger"


async def test_dlq_show_gives_one_entry_in_full(cli: Cli, scenario: Scenario) -> None:
    _, out, _ = await cli("dlq", "list", scenario.stream, "--json", "--error", "mismatch")
    [listed] = json.loads(out)["entries"]
    code, out, _ = await cli("dlq", "show", scenario.stream, listed["dlq_id"], "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["event"] == scenario.refused.model_dump(mode="json", exclude_none=True)
    assert shown["error_message"] == "amount mismatch"
    assert shown["attempts"] == "1"
    assert shown["original_id"]
    code, out, _ = await cli("dlq", "show", scenario.stream, listed["dlq_id"])
    assert code == 0
    assert "amount mismatch" in out

    code, _, err = await cli("dlq", "show", scenario.stream, "latest")
    assert code == 2
    assert "not a stream entry id" in err


async def test_replay_by_id_skips_what_is_not_an_event(
    cli: Cli, scenario: Scenario, redis_client: redis.asyncio.Redis
) -> None:
    dlq = keys.dead_letter_key(scenario.stream)
    _, out, _ = await cli("dlq", "list", scenario.stream, "--json", "--reason", "undecodable")
    [undecodable] = json.loads(out)["entries"]
    code, out, _ = await cli("dlq", "replay", scenario.stream, undecodable["dlq_id"], "--json")
    assert code == 0
    report = json.loads(out)
    assert report["replayed"] == []
    assert report["skipped"][0]["dlq_id"] == undecodable["dlq_id"]
    assert await redis_client.xlen(dlq) == 3

    code, _, err = await cli("dlq", "replay", scenario.stream, "1-1")
    assert code == 2
    assert "no entry 1-1" in err
    code, _, err = await cli("dlq", "replay", scenario.stream)
    assert code == 2
    assert "--all" in err


async def test_purge_asks_for_the_stream_name_unless_yes(
    cli: Cli,
    scenario: Scenario,
    redis_client: redis.asyncio.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dlq = keys.dead_letter_key(scenario.stream)
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    code, _, err = await cli("dlq", "purge", scenario.stream, "--all", "--type", "payment.*")
    assert code == 1
    assert "nothing deleted" in err
    assert await redis_client.xlen(dlq) == 3

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # nobody there to answer
    code, _, _ = await cli("dlq", "purge", scenario.stream, "--all")
    assert code == 1
    assert await redis_client.xlen(dlq) == 3

    code, out, _ = await cli("dlq", "purge", scenario.stream, "--all", "--dry-run", "--json")
    assert code == 0
    assert len(json.loads(out)["would_delete"]) == 3
    assert await redis_client.xlen(dlq) == 3

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{scenario.stream}\n"))
    code, out, _ = await cli("dlq", "purge", scenario.stream, "--all", "--type", "payment.*")
    assert code == 0
    assert "deleted 2 entries" in out
    assert await redis_client.xlen(dlq) == 1

    code, out, _ = await cli("dlq", "purge", scenario.stream, "--all", "--yes", "--json")
    assert code == 0
    assert json.loads(out)["deleted"] == 1
    assert await redis_client.xlen(dlq) == 0


async def test_streams_reports_length_groups_lag_pending_and_consumers(
    cli: Cli, scenario: Scenario, redis_client: redis.asyncio.Redis
) -> None:
    # a second group that has read one entry and acknowledged nothing
    key = keys.stream_key(scenario.stream)
    await redis_client.xgroup_create(key, "audit", id="0")
    await redis_client.xreadgroup("audit", "auditor-1", {key: ">"}, count=1)

    code, out, _ = await cli("streams", scenario.stream, "--json")
    assert code == 0
    [info] = json.loads(out)["streams"]
    assert info["stream"] == scenario.stream
    assert info["key"] == key
    assert info["length"] == 4
    assert info["dead_letters"] == 3
    groups = {g["name"]: g for g in info["groups"]}
    assert groups["ledger"]["lag"] == 0
    assert groups["ledger"]["pending"] == 0
    assert groups["ledger"]["oldest_pending_age_s"] is None
    assert [c["name"] for c in groups["ledger"]["consumers"]] == ["pod-a"]
    audit = groups["audit"]
    assert audit["lag"] == 3
    assert audit["pending"] == 1
    assert audit["oldest_pending_age_s"] >= 0
    assert audit["consumers"][0] == {
        "name": "auditor-1",
        "pending": 1,
        "idle_ms": audit["consumers"][0]["idle_ms"],
        "inactive_ms": audit["consumers"][0]["inactive_ms"],
    }

    assert info["retention"] == "acknowledged"
    assert info["dead_letter_retention"] == "30d"

    code, out, _ = await cli("streams")  # every stream found; not a terminal: tab-separated
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    header = rows[0]
    assert header[:4] == ["stream", "length", "dead letters", "group"]
    assert header[-1] == "retention"
    ledger = next(r for r in rows if scenario.stream in r and "ledger" in r)
    assert ledger[header.index("dead letters")] == "3", "markup is gone from plain output"
    assert ledger[-1] == "acknowledged; dead letters 30d"
    assert any(r[:3] == [scenario.stream, "audit", "auditor-1"] for r in rows), "unfolded"


async def test_a_stream_redis_does_not_hold_is_an_error_that_lists_the_known_ones(
    cli: Cli, scenario: Scenario
) -> None:
    for command in (["streams", "no.such"], ["tail", "no.such"], ["dlq", "list", "no.such"]):
        code, _, err = await cli(*command)
        assert code == 2, command
        assert "no stream 'no.such'" in err
        assert scenario.stream in err, "the known streams are listed"


async def test_a_stream_no_group_reads_shows_its_age_limit(
    cli: Cli, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}.sent"
    await Publisher(redis_client).publish(make_event(1), stream=stream)
    code, out, _ = await cli("streams", stream, "--json")
    assert code == 0
    [info] = json.loads(out)["streams"]
    assert (info["retention"], info["groups"]) == ("7d", [])


async def test_tail_decodes_the_newest_events(cli: Cli, scenario: Scenario) -> None:
    code, out, _ = await cli("tail", scenario.stream, "-n", "2", "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    assert lines[0]["event"]["id"] == scenario.fine.id
    assert lines[0]["event"]["type"] == "payment.succeeded.v1"
    assert "error" in lines[1]
    assert lines[1]["fields"] == {"payload": "not an event"}

    code, out, _ = await cli("tail", scenario.stream, "-n", "4")
    assert code == 0
    assert scenario.refused.id in out
    assert "undecodable" in out


async def test_tail_follow_prints_events_published_after_it_started(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"ops.follow.{unique}"
    publisher = Publisher(redis_client)
    first = make_event(1)
    await publisher.publish(first, stream=stream)
    with subprocess.Popen(  # noqa: ASYNC220 - a real process, read line by line
        [sys.executable, "-m", "riverbed.cli", "--redis-url", redis_url, "tail", stream,
         "-n", "1", "--follow", "--limit", "2", "--json"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as follower:  # fmt: skip
        try:
            assert follower.stdout is not None
            # the first line is the newest entry, printed after the follow position was taken
            line = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 20)
            assert json.loads(line)["event"]["id"] == first.id
            second = make_event(2)
            await publisher.publish(second, stream=stream)
            line = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 20)
            assert json.loads(line)["event"]["id"] == second.id
            assert await asyncio.to_thread(follower.wait, 20) == 0  # --limit 2 reached
        finally:
            if follower.poll() is None:
                follower.kill()


async def test_publish_uses_the_contract_example_and_validates_given_data(
    cli: Cli, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"ops.publish.{unique}"
    code, out, _ = await cli("publish", "email.requested.v1", "--stream", stream, "--json")
    assert code == 0
    [published] = json.loads(out)["published"]
    entries = await redis_client.xrange(keys.stream_key(stream))
    event = event_from_entry(entries[0][1])
    assert event.id == published["event_id"]
    assert event.type == "email.requested.v1"
    assert event.data["to"] == "ada@example.com"

    code, out, _ = await cli(
        "publish", "payment.succeeded.v1", "--stream", stream, "--count", "2",
        "--data", '{"provider":"stripe","provider_payment_id":"pi_1","amount":5,"currency":"EUR"}',
    )  # fmt: skip
    assert code == 0
    assert out.count("published payment.succeeded.v1") == 2
    assert await redis_client.xlen(keys.stream_key(stream)) == 3

    code, _, err = await cli("publish", "payment.succeeded.v1", "--stream", stream,
                             "--data", '{"amount": -1}')  # fmt: skip
    assert code == 2
    assert "does not fit payment.succeeded.v1" in err
    code, _, err = await cli("publish", "no.such.v1")
    assert code == 2
    assert "known types" in err
    assert await redis_client.xlen(keys.stream_key(stream)) == 3


def test_unreachable_redis_is_reported_without_its_password() -> None:
    url = f"redis://ops:s3cret@127.0.0.1:{free_port()}/0"
    err = io.StringIO()
    assert main(["--redis-url", url, "streams"], stdout=io.StringIO(), stderr=err) == 1
    assert "s3cret" not in err.getvalue()
    assert "ops:***@127.0.0.1" in err.getvalue()


def test_times_are_iso_8601_or_ages() -> None:
    assert parse_when("30m", now=10_000.0) == (10_000 - 1800) * 1000
    assert parse_when("2024-05-01T12:00:00Z") == 1_714_564_800_000
    with pytest.raises(Exception, match="not a time"):
        parse_when("yesterday")
