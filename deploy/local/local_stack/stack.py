"""What the launcher started, for probing and stopping it in order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .processes import Child, Stop, http_status, stop
from .spec import HOST, ServiceSpec


@dataclass
class Running:
    """A service the launcher started, and where it answers."""

    spec: ServiceSpec
    child: Child
    port: int

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


@dataclass
class Stack:
    """What this launcher started, for stopping it in order: services, sinks, the Redis
    exporter, Redis."""

    services: list[Running] = field(default_factory=list)
    sinks: list[Child] = field(default_factory=list)
    redis: Child | None = None
    exporter: Child | None = None  # the Redis exporter, when its binary is on PATH
    exporter_url: str = ""  # its metrics page

    def children(self) -> list[Child]:
        helpers = [child for child in (self.exporter, self.redis) if child is not None]
        return [r.child for r in self.services] + self.sinks + helpers

    def stop(self, stop_timeout: float, stop_flag: Stop) -> None:
        stop([r.child for r in self.services], stop_timeout, stop_flag)
        # after the services, so they can finish what they were sending
        stop(self.sinks, 5.0, stop_flag)
        if self.exporter is not None:
            stop([self.exporter], 5.0, stop_flag)
        if self.redis is not None:
            # After the services, so they can acknowledge what they finished.
            stop([self.redis], 10.0, stop_flag)


def check(services: list[Running], timeout: float, stop_flag: Stop) -> dict[str, str]:
    """Poll each service until its ready probe is 200; past ``timeout`` (s) fall back to its
    health probe, to tell a live but unready service from a dead one."""
    results: dict[str, str] = {}
    alive: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(results) < len(services):
        for service in services:
            name, spec = service.spec.name, service.spec
            if name in results:
                continue
            if service.child.process.poll() is not None:
                results[name] = f"FAILED: {service.child.describe_exit()}"
            elif http_status(service.url(spec.ready)) == 200:
                results[name] = f"ready ({spec.ready} 200)"
            elif name not in alive and http_status(service.url(spec.health)) == 200:
                alive.add(name)
        if time.monotonic() >= deadline or stop_flag.requested.is_set():
            for service in services:
                spec = service.spec
                results.setdefault(
                    spec.name,
                    f"alive, not ready ({spec.health} 200, {spec.ready} not 200)"
                    if spec.name in alive
                    else f"FAILED: neither {spec.ready} nor {spec.health} answered 200 "
                    f"in {timeout:g} s",
                )
            break
        time.sleep(0.25)
    return results
