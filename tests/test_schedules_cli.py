"""`riverbed schedules …` against a real Redis: upsert (idempotent), list, show, pause,
resume, remove, and the errors an operator sees.

The CLI works on the default schedule index, so each test gets a private redis-server
(``own_redis``) rather than writing that index in a shared Redis.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.cli import main
from riverbed.testing import RedisServer

pytestmark = pytest.mark.integration

Cli = Callable[..., Awaitable[tuple[int, str, str]]]
EMAIL = '{"to": "ops@example.com", "subject": "Daily digest", "text": "Good morning"}'


@pytest.fixture
def cli(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``riverbed ARGS…`` in-process against the private Redis (in a thread: it runs
    its own event loop)."""
    monkeypatch.setenv("COLUMNS", "200")  # rich's width off a terminal: tables unwrapped

    async def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            main, ["--redis-url", own_redis.url, *argv], stdout=out, stderr=err
        )
        return code, out.getvalue(), err.getvalue()

    return run


def upsert_args(name: str = "digest", **options: str) -> list[str]:
    """``schedules upsert NAME`` with a valid daily digest; ``options`` replace or add
    (``tz="Berlin"`` is ``--tz Berlin``)."""
    values = {"cron": "0 8 * * *", "tz": "Europe/Berlin", "type": "email.requested.v1"}
    values["data"] = EMAIL
    values.update(options)
    flags = [item for option, value in values.items() for item in (f"--{option}", value)]
    return ["schedules", "upsert", name, *flags]


async def test_upsert_twice_creates_once_and_keeps_the_next_fire_time(cli: Cli) -> None:
    code, out, err = await cli(*upsert_args(), "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["outcome"] == "created"
    schedule = created["schedule"]
    assert (schedule["status"], schedule["stream"]) == ("active", "email.requested")
    upcoming = datetime.fromisoformat(schedule["next_fire"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (upcoming.hour, upcoming.minute) == (8, 0)

    code, out, _ = await cli(*upsert_args(), "--json")
    assert code == 0
    again = json.loads(out)
    assert again["outcome"] == "unchanged"
    assert again["schedule"]["next_fire"] == schedule["next_fire"]

    code, out, _ = await cli(*upsert_args())  # the line for people
    assert code == 0
    assert out.startswith("unchanged schedule digest: active; next fire ")
    assert "rb:{email.requested}:stream" in out


async def test_list_and_show_describe_each_schedule(cli: Cli) -> None:
    assert (await cli(*upsert_args()))[0] == 0
    code, _, err = await cli(
        "schedules", "upsert", "heartbeat", "--every", "300", "--type", "payment.succeeded.v1",
        "--data", '{"provider": "stripe", "provider_payment_id": "pi_1", "amount": 1, '
        '"currency": "EUR"}', "--limit", "3",
    )  # fmt: skip
    assert code == 0, err

    code, out, _ = await cli("schedules", "list")
    assert code == 0
    assert "0 8 * * * (Europe/Berlin)" in out
    assert "every 300s" in out
    code, out, _ = await cli("schedules", "list", "--json")
    listed = {s["name"]: s for s in json.loads(out)["schedules"]}
    assert set(listed) == {"digest", "heartbeat"}
    assert listed["heartbeat"]["limit"] == 3

    code, out, _ = await cli("schedules", "show", "digest", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["data"] == json.loads(EMAIL)
    assert (shown["fired"], shown["misfires_skipped"], shown["last_fire"]) == (0, 0, None)
    code, _, err = await cli("schedules", "show", "nope")
    assert code == 2
    assert "no schedule named 'nope'" in err


async def test_pause_resume_and_remove(cli: Cli, own_redis: RedisServer) -> None:
    assert (await cli(*upsert_args()))[0] == 0
    code, out, _ = await cli("schedules", "pause", "digest", "--json")
    assert code == 0
    paused = json.loads(out)
    assert (paused["status"], paused["next_fire"]) == ("paused", None)
    code, out, _ = await cli("schedules", "resume", "digest")
    assert code == 0
    assert out.startswith("schedule digest: active; next fire ")

    code, out, _ = await cli("schedules", "remove", "digest")
    assert code == 0
    assert "removed schedule digest" in out
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        assert not await client.exists(keys.schedule_key("email.requested", "digest"))
        assert not await client.hexists(keys.schedule_index_key(), "digest")
    finally:
        await client.aclose()
    for verb in ("remove", "pause", "resume"):
        code, _, err = await cli("schedules", verb, "digest")
        assert code == 2, verb
        assert "no schedule named 'digest'" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "0 8 * *"}, "has 4 fields; give five fields"),
        ({"tz": "Berlin"}, "unknown time zone 'Berlin': give an IANA time zone name"),
        ({"data": '{"to": "nobody"}'}, "data does not fit email.requested.v1"),
        ({"data": "{nope"}, "--data is not JSON"),
        ({"start": "2026-01-01T08:00"}, "invalid --start '2026-01-01T08:00'"),
        ({"limit": "0"}, "invalid limit 0"),
        ({"type": "nope.v1"}, "unknown event type 'nope.v1'; known types"),
    ],
)
async def test_a_bad_schedule_is_refused_with_what_is_accepted(
    cli: Cli, options: dict[str, str], message: str
) -> None:
    code, out, err = await cli(*upsert_args(**options))
    assert code == 2
    assert message in err
    assert out == ""
    code, out, _ = await cli("schedules", "list", "--json")
    assert json.loads(out)["schedules"] == [], "nothing was stored"


def test_cron_and_every_together_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(upsert_args(every="60"))
    assert exited.value.code == 2
    assert "argument --every: not allowed with argument --cron" in capsys.readouterr().err


async def test_an_invalid_name_is_refused(cli: Cli) -> None:
    code, _, err = await cli(*upsert_args("has:colon"))
    assert code == 2
    assert "invalid schedule name 'has:colon'" in err
