"""The service template's ordering: a lifespan opens what a service needs before any
consumer, chore or route uses it, and closes it only after they have stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi import Depends

from riverbed.consumer import Message
from riverbed.entrypoint import Command, service_main
from riverbed.lifespan import Resources
from riverbed.problems import install as install_problems
from riverbed.publisher import Publisher
from riverbed.service import Service, container_of
from riverbed.settings import RedisSettings, ServiceSettings
from riverbed.testing import fast_settings, make_event, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Journal:
    """The container of the test service: it records what happened, in order."""

    steps: list[str] = field(default_factory=list)
    open: bool = False
    chore_rounds: int = 0

    async def handle(self, message: Message[Any]) -> None:
        assert self.open, "a handler ran while the lifespan's resources were closed"
        self.steps.append(f"handled {message.event.id}")

    async def chore(self) -> None:
        assert self.open, "a chore ran while the lifespan's resources were closed"
        self.chore_rounds += 1


def journal_lifespan(journal: Journal) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(settings: ServiceSettings, resources: Resources) -> AsyncIterator[Journal]:
        await resources.redis.ping()  # the runtime's Redis is open before the lifespan runs
        journal.steps.append("opened")
        journal.open = True
        yield journal
        journal.steps.append("closing")
        journal.open = False

    return lifespan


def make_service(redis_url: str, journal: Journal, lifespan: Any = None) -> Service[Any, Journal]:
    service: Service[Any, Journal] = Service(
        ServiceSettings(service_name="lifespan-test"),
        lifespan or journal_lifespan(journal),
        redis_settings=RedisSettings(url=redis_url),
        consumer_settings=fast_settings(),
    )
    return service


async def test_consumers_and_chores_run_only_inside_the_lifespan(
    redis_url: str, redis_client: redis.asyncio.Redis, unique: str
) -> None:
    stream = f"t.{unique}"
    events = [make_event(i) for i in range(5)]
    await Publisher(redis_client).publish_many(events, stream=stream)
    journal = Journal()
    service = make_service(redis_url, journal)
    service.subscribe(stream, handler_of=lambda container: container.handle, group="g")
    service.every(0.01, lambda container: container.chore(), name="test chore")
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.container
    await service.start()
    try:
        assert service.container is journal
        await wait_for(lambda: len(journal.steps) == 6, what="every event handled")
        await wait_for(lambda: journal.chore_rounds >= 2, what="two chore rounds")
    finally:
        await service.stop()
    assert journal.steps[0] == "opened"
    assert journal.steps[-1] == "closing"  # after every handler, the drain included
    assert sorted(journal.steps[1:-1]) == sorted(f"handled {e.id}" for e in events)
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.container


async def test_a_failing_lifespan_fails_start_and_closes_redis(redis_url: str) -> None:
    @contextlib.asynccontextmanager
    async def broken(settings: ServiceSettings, resources: Resources) -> AsyncIterator[Journal]:
        raise RuntimeError("database unreachable")
        yield Journal()  # pragma: no cover - never reached

    service = make_service(redis_url, Journal(), broken)
    service.subscribe("never.read", handler_of=lambda container: container.handle)
    with pytest.raises(RuntimeError, match="database unreachable"):
        await service.start()
    assert service.consumers == []
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.redis  # closed again, not leaked


async def test_routes_reach_the_container_and_get_503_outside_it(redis_url: str) -> None:
    journal = Journal()
    service = make_service(redis_url, journal)
    install_problems(service.app)

    @service.app.get("/steps")
    async def steps(container: Journal = Depends(container_of)) -> list[str]:  # noqa: B008
        return container.steps

    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        starting = await http.get("/steps")
        assert starting.status_code == 503
        assert starting.headers["retry-after"] == "1"
        assert starting.json()["type"].endswith("/starting")
        await service.start()
        try:
            answer = await http.get("/steps")
            assert answer.status_code == 200
            assert answer.json() == ["opened"]
        finally:
            await service.stop()
        assert (await http.get("/steps")).status_code == 503


async def test_subscribe_takes_exactly_one_handler(redis_url: str) -> None:
    service = make_service(redis_url, Journal())
    with pytest.raises(TypeError, match="exactly one"):
        service.subscribe("s")
    with pytest.raises(TypeError, match="exactly one"):
        service.subscribe("s", Journal().handle, handler_of=lambda c: c.handle)


def test_the_command_line_runs_a_named_command_with_its_arguments() -> None:
    ran: list[argparse.Namespace] = []

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true")

    def run(args: argparse.Namespace) -> int:
        ran.append(args)
        return 3

    def never_served() -> Service[Any, Any]:
        raise AssertionError("serve() must not be called for a named command")

    status = service_main(
        ["migrate", "--dry-run"],
        prog="riverbed-test",
        description="test",
        serve=never_served,
        commands=[Command("migrate", "apply migrations", run, add_arguments)],
    )
    assert status == 3
    assert ran[0].dry_run is True


async def test_chores_that_fail_are_logged_and_come_again(redis_url: str) -> None:
    journal = Journal()
    service = make_service(redis_url, journal)
    rounds = 0

    async def flaky(container: Journal) -> None:
        nonlocal rounds
        rounds += 1
        raise ConnectionError("not this time")

    service.every(0.01, flaky, name="flaky chore")
    await service.start()
    try:
        await wait_for(lambda: rounds >= 3, what="three rounds despite failures")
    finally:
        await service.stop()
    await asyncio.sleep(0.05)
    after_stop = rounds
    await asyncio.sleep(0.05)
    assert rounds == after_stop  # cancelled at stop
