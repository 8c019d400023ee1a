"""FastAPI dependencies: what a route needs from the running gateway's container (a 503
while the gateway is starting or stopping, from :func:`riverbed.service.container_of`)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from riverbed.service import container_of
from riverbed_gateway.service_layer.inbound_payments import InboundPayments
from riverbed_gateway.service_layer.ingestion import Ingestion
from riverbed_gateway.service_layer.scheduled_events import ScheduledEvents
from riverbed_gateway.service_layer.schedules_admin import SchedulesAdmin


def ingestion(request: Request) -> Ingestion:
    return cast(Ingestion, container_of(request).ingestion)


def inbound_payments(request: Request) -> InboundPayments:
    return cast(InboundPayments, container_of(request).inbound_payments)


def scheduled_events(request: Request) -> ScheduledEvents:
    return cast(ScheduledEvents, container_of(request).scheduled_events)


def schedules_admin(request: Request) -> SchedulesAdmin:
    return cast(SchedulesAdmin, container_of(request).schedules_admin)


IngestionDep = Annotated[Ingestion, Depends(ingestion)]
InboundPaymentsDep = Annotated[InboundPayments, Depends(inbound_payments)]
ScheduledEventsDep = Annotated[ScheduledEvents, Depends(scheduled_events)]
SchedulesAdminDep = Annotated[SchedulesAdmin, Depends(schedules_admin)]
