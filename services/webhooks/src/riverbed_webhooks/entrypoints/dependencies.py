"""What the routes need from the started service, as FastAPI dependencies: one per use
case or resource, each picked from the container (:func:`riverbed.service.container_of`).

Before the service has started (and while it stops) they answer 503 with ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from riverbed.service import container_of
from riverbed_webhooks.service_layer import endpoints, ports, replay


class Started(Protocol):
    """What the routes use of the container the composition root wires."""

    @property
    def manager(self) -> endpoints.EndpointManager: ...

    @property
    def replayer(self) -> replay.Replayer: ...

    @property
    def delivery_log(self) -> ports.DeliveryLog: ...

    @property
    def clock(self) -> ports.Clock: ...


def started(request: Request) -> Started:
    """The container; a 503 ``starting`` problem while the service starts or stops."""
    container: Started = container_of(request)
    return container


def endpoint_manager(request: Request) -> endpoints.EndpointManager:
    return started(request).manager


def replayer(request: Request) -> replay.Replayer:
    return started(request).replayer


def delivery_log(request: Request) -> ports.DeliveryLog:
    return started(request).delivery_log


def clock(request: Request) -> ports.Clock:
    return started(request).clock


Manager = Annotated[endpoints.EndpointManager, Depends(endpoint_manager)]
Replayer = Annotated[replay.Replayer, Depends(replayer)]
DeliveryLog = Annotated[ports.DeliveryLog, Depends(delivery_log)]
Clock = Annotated[ports.Clock, Depends(clock)]
