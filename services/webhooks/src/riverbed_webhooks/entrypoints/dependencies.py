"""What the routes need from the started service, as FastAPI dependencies: one per use
case or resource, each picked from the container (:func:`riverbed.service.container_of`).

Before the service has started (and while it stops) they answer 503 with ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from riverbed.service import container_of
from riverbed_webhooks.entrypoints.problems import Problem
from riverbed_webhooks.service_layer import endpoints, ports, replay


def _started(request: Request) -> Any:
    """The container, or a 503 problem while the service starts or stops."""
    try:
        return container_of(request)
    except HTTPException:
        raise Problem(
            503, "starting", "Service starting", "the service is not ready; retry shortly",
            headers={"Retry-After": "1"},
        ) from None  # fmt: skip


def endpoint_manager(request: Request) -> endpoints.EndpointManager:
    manager: endpoints.EndpointManager = _started(request).manager
    return manager


def replayer(request: Request) -> replay.Replayer:
    found: replay.Replayer = _started(request).replayer
    return found


def delivery_log(request: Request) -> ports.DeliveryLog:
    log: ports.DeliveryLog = _started(request).delivery_log
    return log


def clock(request: Request) -> ports.Clock:
    now: ports.Clock = _started(request).clock
    return now


Manager = Annotated[endpoints.EndpointManager, Depends(endpoint_manager)]
Replayer = Annotated[replay.Replayer, Depends(replayer)]
DeliveryLog = Annotated[ports.DeliveryLog, Depends(delivery_log)]
Clock = Annotated[ports.Clock, Depends(clock)]
