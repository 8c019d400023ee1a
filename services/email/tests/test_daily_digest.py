"""The shipped daily digest: its template renders, and the README's ways of scheduling it
work as written — the CLI command stores a schedule whose occurrence is a request this
service can render, and the HTTP body is a valid schedule too."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio

from riverbed import keys
from riverbed.cli import main
from riverbed.schedules import ScheduleDefinition, Scheduler, parse_time
from riverbed.testing import RedisServer
from riverbed_contracts.email import SendEmail
from riverbed_email.adapters.templates import TemplateRenderer

SERVICE = Path(__file__).parents[1]
SHIPPED = SERVICE / "templates"


def readme_section() -> str:
    text = (SERVICE / "README.md").read_text()
    start = text.index("### A daily digest, on a schedule")
    return text[start : text.index("\n## ", start)]


def readme_commands() -> list[list[str]]:
    """The shell commands of the section, continuation lines joined, split as a shell would."""
    blocks = re.findall(r"```sh\n(.*?)```", readme_section(), flags=re.DOTALL)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks]


def test_the_digest_renders_with_only_a_name() -> None:
    content = TemplateRenderer(SHIPPED).render_template("daily-digest", {"name": "Ops"})
    assert content.subject == "Daily digest for Ops"
    assert content.text.startswith("Good morning Ops,\n\nThis is your daily digest.\n\n")
    assert content.html is not None
    assert "<ul>" not in content.html


def test_the_digest_lists_items_and_escapes_them_in_html() -> None:
    content = TemplateRenderer(SHIPPED).render_template(
        "daily-digest",
        {"name": "Ops", "items": ["3 <new> dead letters"], "dashboard_url": "https://d.example"},
    )
    assert "- 3 <new> dead letters\n" in content.text
    assert "Everything else is on the dashboard: https://d.example" in content.text
    assert content.html is not None
    assert "<li>3 &lt;new&gt; dead letters</li>" in content.html


@pytest.mark.integration
async def test_the_readme_command_schedules_a_digest_this_service_can_send(
    own_redis: RedisServer,
) -> None:
    [command] = [c for c in readme_commands() if c[:2] == ["riverbed", "schedules"]]
    out, err = io.StringIO(), io.StringIO()
    argv = ["--redis-url", own_redis.url, *command[1:], "--json"]
    code = await asyncio.to_thread(main, argv, stdout=out, stderr=err)  # runs its own loop
    assert code == 0, err.getvalue()
    schedule = json.loads(out.getvalue())["schedule"]
    next_fire = parse_time(schedule["next_fire"], what="next_fire")
    local = datetime.fromtimestamp(next_fire / 1000, ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (8, 0)

    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        # the morning comes: a scheduler publishes the day's request
        fired = await Scheduler(client, clock=lambda: next_fire / 1000 + 1).tick()
        assert [f.name for f in fired] == ["daily-digest"]
        [(_, fields)] = await client.xrange(keys.stream_key("email.requested"))
    finally:
        await client.aclose()
    request = SendEmail.model_validate(json.loads(fields[b"event"])["data"])
    content = TemplateRenderer(SHIPPED).render(request)
    assert content.subject == "Daily digest for Ops"
    assert request.category == "bulk"


def test_the_readme_http_body_is_a_valid_schedule() -> None:
    [curl] = [c for c in readme_commands() if c[0] == "curl"]
    body: dict[str, Any] = json.loads(curl[curl.index("-d") + 1])
    definition = ScheduleDefinition(name="daily-digest", **body)
    definition.check_template()  # raises ScheduleError when the data does not fit
    request = SendEmail.model_validate(definition.data)
    assert TemplateRenderer(SHIPPED).render(request).subject == "Daily digest for Ops"
