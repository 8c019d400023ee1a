"""Every event this service publishes carries ``source=riverbed_webhooks.SOURCE``.

Consumers drop an internal type whose ``source`` is not its producer's
(``urn:riverbed:webhooks``), so a task or an outcome published under another source
would be dead-lettered by whoever reads it, and one that takes the source of the event it
follows from would claim to come from the gateway. Two checks: every place in the code
that builds an event names ``SOURCE`` (so a new one cannot forget it), and a real run that
makes every kind of event (fan-out tasks, a replay's task, succeeded, exhausted, disabled by
a 410 and by an operator) finds nothing else on the streams it writes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

import riverbed_webhooks
from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.testing import make_event, wait_for
from riverbed_contracts import event_from_entry

SOURCE_DIR = Path(riverbed_webhooks.__file__).parent
#: calls that make an event: the registry's builder, the envelope, a follow-up of a cause
BUILDERS = {"new_event", "CloudEvent", "caused"}
OWN_STREAMS = (
    "webhook.delivery.requested",
    "webhook.delivery.succeeded",
    "webhook.delivery.exhausted",
    "webhook.endpoint.disabled",
)


def event_builders() -> list[tuple[str, int, ast.Call]]:
    found = []
    for path in sorted(SOURCE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in BUILDERS:
                found.append((str(path.relative_to(SOURCE_DIR)), node.lineno, node))
    return found


def test_every_event_the_code_builds_names_the_service_source() -> None:
    builders = event_builders()
    assert len(builders) >= 4  # fan-out, replay, a delivery's outcome, disabled
    for where, line, call in builders:
        sources = [k.value for k in call.keywords if k.arg == "source"]
        assert sources, f"{where}:{line} builds an event without source="
        assert isinstance(sources[0], ast.Name), f"{where}:{line}"
        assert sources[0].id == "SOURCE", f"{where}:{line} sets another source"
    assert riverbed_webhooks.SOURCE == "urn:riverbed:webhooks"


@pytest.mark.integration
async def test_every_event_on_the_streams_it_writes_has_the_service_source(
    start_service: Any, receiver: Any, redis_client: redis.asyncio.Redis
) -> None:
    running = await start_service(retry_schedule_ms=[10, 10])
    # a group nobody reads keeps every task on the stream: retention trims only what every
    # group acknowledged
    task_stream = keys.stream_key(running.stream("webhook.delivery.requested"))
    await redis_client.xgroup_create(task_stream, "observer", "0", mkstream=True)
    ids = {}
    for path, answer in (("/ok", 200), ("/failing", 500), ("/gone", 410), ("/manual", 200)):
        url = receiver.script(path, answer)
        created = await running.client.post("/v1/endpoints", json={"url": url})
        assert created.status_code == 201, created.text
        receiver.trust(path, created.json()["secret"])
        ids[path] = created.json()["id"]
    disabled = await running.client.post(f"/v1/endpoints/{ids['/manual']}/disable")
    assert disabled.status_code == 200, disabled.text
    event = make_event(7)
    await Publisher(redis_client).publish(event, stream=running.source_stream)

    async def concluded() -> bool:
        found = await running.client.get(f"/v1/events/{event.id}/deliveries")
        statuses = {d["endpoint_id"]: d["status"] for d in found.json()["data"]}
        return statuses == {
            ids["/ok"]: "succeeded",
            ids["/failing"]: "exhausted",
            ids["/gone"]: "dropped",
        }

    await wait_for(concluded, what="succeeded, exhausted and dropped (410) deliveries")
    delivered = next(
        d
        for d in (await running.client.get(f"/v1/events/{event.id}/deliveries")).json()["data"]
        if d["endpoint_id"] == ids["/ok"]
    )
    replayed = await running.client.post(f"/v1/deliveries/{delivered['delivery_id']}/replay")
    assert replayed.status_code == 202, replayed.text
    await wait_for(lambda: len(receiver.to("/ok")) == 2, what="the replay delivered")

    async def on(logical: str) -> list[Any]:
        entries = await redis_client.xrange(keys.stream_key(running.stream(logical)))
        return [event_from_entry(fields) for _, fields in entries]

    async def every_kind_published() -> bool:
        # retries are the same task appended again: counted by event id
        counts = {logical: len({e.id for e in await on(logical)}) for logical in OWN_STREAMS}
        return counts == {
            "webhook.delivery.requested": 4,  # three from the fan-out, one replay
            "webhook.delivery.succeeded": 2,  # the first delivery and its replay
            "webhook.delivery.exhausted": 1,
            "webhook.endpoint.disabled": 2,  # the operator's and the 410's
        }

    await wait_for(every_kind_published, what="every kind of event on its stream")
    await redis_client.xgroup_destroy(task_stream, "observer")
    published = [e for logical in OWN_STREAMS for e in await on(logical)]
    wrong = [(e.type, e.id, e.source) for e in published if e.source != riverbed_webhooks.SOURCE]
    assert not wrong, f"events published under another source: {wrong}"
    # the dead-lettered task too: it is the task as published
    dead = await redis_client.xrange(
        keys.dead_letter_key(running.stream("webhook.delivery.requested"))
    )
    assert dead
    assert {event_from_entry(f).source for _, f in dead} == {riverbed_webhooks.SOURCE}
