"""The management API: endpoints, their secrets, the delivery log, replays.

Every route needs ``Authorization: Bearer <WEBHOOKS_API_KEY>``, an admin key of its own
(never the gateway's ingestion key): the API hands out signing secrets and decides where
this service sends requests (:func:`key_required`, given when the router is included).
Secrets appear in a response only when created or rotated.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, Security, status
from fastapi.security import HTTPBearer

from riverbed.problems import bearer_key_check, found_or_404
from riverbed_webhooks.domain.model import DeliveryStatus
from riverbed_webhooks.entrypoints.dependencies import Clock, DeliveryLog, Manager, Replayer
from riverbed_webhooks.entrypoints.problems import Problem, problem_responses
from riverbed_webhooks.entrypoints.schemas import (
    AttemptList,
    AttemptOut,
    BeforeAttempt,
    DeliveryList,
    DeliveryOut,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
    Replayed,
    ReplayIn,
    RotateIn,
    SecretOut,
)
from riverbed_webhooks.service_layer.endpoints import EndpointSpec

#: path parameters, as long as the columns that hold them (longer: 422, not a lookup)
EndpointId = Annotated[str, Path(min_length=1, max_length=64, description="ep_…")]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64, description="dlv_…")]
EventId = Annotated[str, Path(min_length=1, max_length=255, description="the event's id")]
#: a route with path parameters also answers 404 (unknown id, or no route at the path)
FOUND = problem_responses(404)
#: documents the scheme; key_required() below decides (this one refuses nothing itself)
BEARER = HTTPBearer(auto_error=False, description="WEBHOOKS_API_KEY, the admin key")


def key_required(api_key: str | None) -> list[Any]:
    """The dependencies that admit a request presenting ``api_key`` (the setting
    ``WEBHOOKS_API_KEY``; without one, every route answers 503): include the router with
    ``app.include_router(router, dependencies=key_required(api_key))``."""
    return [Security(BEARER), Depends(bearer_key_check(api_key, setting="WEBHOOKS_API_KEY"))]


router = APIRouter(
    prefix="/v1",
    tags=["webhooks"],
    # every route: the key, validation (each has parameters or a body), availability
    responses=problem_responses(401, 422, 503),
)


@router.post(
    "/endpoints",
    status_code=status.HTTP_201_CREATED,
    summary="Register an endpoint",
    responses=problem_responses(400),
)
async def create_endpoint(body: EndpointIn, manager: Manager, clock: Clock) -> EndpointWithSecret:
    """The new endpoint, with its signing secret: shown this once."""
    endpoint = await manager.create(
        EndpointSpec(
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            rate_limit_per_s=body.rate_limit_per_s,
            max_concurrency=body.max_concurrency,
        )
    )
    out = EndpointOut.of(endpoint, clock())
    return EndpointWithSecret(**out.model_dump(), secret=endpoint.secret)


@router.get("/endpoints", summary="List endpoints (by id, paged)")
async def list_endpoints(
    manager: Manager,
    clock: Clock,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> EndpointList:
    page = await manager.repository.page(limit=limit, after=after)
    now = clock()
    return EndpointList(
        data=[EndpointOut.of(e, now) for e in page],
        next_after=page[-1].id if len(page) == limit else None,
    )


@router.get(
    "/endpoints/{endpoint_id}", summary="One endpoint (without its secret)", responses=FOUND
)
async def get_endpoint(endpoint_id: EndpointId, manager: Manager, clock: Clock) -> EndpointOut:
    return EndpointOut.of(await manager.get(endpoint_id), clock())


@router.patch(
    "/endpoints/{endpoint_id}",
    summary="Change an endpoint's settings",
    responses=problem_responses(400, 404),
)
async def update_endpoint(
    endpoint_id: EndpointId, body: EndpointPatch, manager: Manager, clock: Clock
) -> EndpointOut:
    given = body.model_fields_set
    endpoint = await manager.update(
        endpoint_id,
        EndpointSpec(
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            rate_limit_per_s=body.rate_limit_per_s,
            max_concurrency=body.max_concurrency,
            clear_rate_limit="rate_limit_per_s" in given and body.rate_limit_per_s is None,
            clear_max_concurrency="max_concurrency" in given and body.max_concurrency is None,
        ),
    )
    return EndpointOut.of(endpoint, clock())


@router.post(
    "/endpoints/{endpoint_id}/disable",
    summary="Stop deliveries to an endpoint",
    responses=FOUND,
)
async def disable_endpoint(endpoint_id: EndpointId, manager: Manager, clock: Clock) -> EndpointOut:
    return EndpointOut.of(await manager.disable(endpoint_id), clock())


@router.post(
    "/endpoints/{endpoint_id}/enable",
    summary="Resume deliveries to an endpoint",
    responses=FOUND,
)
async def enable_endpoint(endpoint_id: EndpointId, manager: Manager, clock: Clock) -> EndpointOut:
    return EndpointOut.of(await manager.enable(endpoint_id), clock())


@router.delete(
    "/endpoints/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an endpoint (its delivery log stays)",
    responses=FOUND,
)
async def delete_endpoint(endpoint_id: EndpointId, manager: Manager) -> Response:
    await manager.delete(endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/endpoints/{endpoint_id}/secret/rotate",
    summary="Rotate the signing secret",
    responses=problem_responses(400, 404),
)
async def rotate_secret(
    endpoint_id: EndpointId, manager: Manager, body: RotateIn | None = None
) -> SecretOut:
    """A new secret, shown this once; the old one still signs during the grace period."""
    grace = None
    if body is not None and body.grace_period_s is not None:
        grace = timedelta(seconds=body.grace_period_s)
    endpoint = await manager.rotate_secret(endpoint_id, grace)
    return SecretOut(
        secret=endpoint.secret,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
    )


@router.get(
    "/endpoints/{endpoint_id}/attempts",
    summary="Delivery log of an endpoint, newest first",
    responses=FOUND,
)
async def endpoint_attempts(
    endpoint_id: EndpointId,
    delivery_log: DeliveryLog,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: BeforeAttempt = None,
) -> AttemptList:
    found = await delivery_log.attempts_for_endpoint(endpoint_id, limit=limit, before=before)
    return AttemptList(
        data=[AttemptOut.of(a) for a in found],
        next_before=found[-1].id if len(found) == limit else None,
    )


@router.get(
    "/endpoints/{endpoint_id}/deliveries",
    summary="Deliveries of an endpoint, newest first",
    responses=FOUND,
)
async def endpoint_deliveries(
    endpoint_id: EndpointId,
    delivery_log: DeliveryLog,
    status: Annotated[list[DeliveryStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    found = await delivery_log.deliveries_for_endpoint(
        endpoint_id, limit=limit, status=status or ()
    )
    return DeliveryList(data=[DeliveryOut.of(d) for d in found])


@router.get(
    "/events/{event_id}/attempts",
    summary="Delivery log of an event, oldest first",
    responses=FOUND,
)
async def event_attempts(
    event_id: EventId, delivery_log: DeliveryLog, limit: Annotated[int, Query(ge=1, le=1000)] = 500
) -> AttemptList:
    found = await delivery_log.attempts_for_event(event_id, limit=limit)
    return AttemptList(data=[AttemptOut.of(a) for a in found], next_before=None)


@router.get(
    "/events/{event_id}/deliveries",
    summary="Deliveries of an event, one per endpoint",
    responses=FOUND,
)
async def event_deliveries(event_id: EventId, delivery_log: DeliveryLog) -> DeliveryList:
    found = await delivery_log.deliveries_for_event(event_id)
    return DeliveryList(data=[DeliveryOut.of(d) for d in found])


@router.get("/deliveries/{delivery_id}", summary="One delivery", responses=FOUND)
async def get_delivery(delivery_id: DeliveryId, delivery_log: DeliveryLog) -> DeliveryOut:
    delivery = await delivery_log.get_delivery(delivery_id)
    return DeliveryOut.of(
        found_or_404(delivery, "Unknown delivery", f"no delivery {delivery_id!r}")
    )


@router.post(
    "/deliveries/{delivery_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver one delivery again",
    responses=problem_responses(404, 409),
)
async def replay_delivery(delivery_id: DeliveryId, replayer: Replayer) -> Replayed:
    task_id = await replayer.replay(delivery_id)
    return Replayed(task_ids=[task_id], count=1)


@router.post(
    "/endpoints/{endpoint_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver again every failed delivery of an endpoint since a time",
    responses=problem_responses(400, 404, 409),
)
async def replay_failed(endpoint_id: EndpointId, body: ReplayIn, replayer: Replayer) -> Replayed:
    since: datetime = body.since
    if since.tzinfo is None:
        raise Problem(
            422, "invalid-request", "Invalid request",
            "since needs a time zone offset (RFC 3339), e.g. 2024-05-01T00:00:00Z",
        )  # fmt: skip
    task_ids = await replayer.replay_failed(endpoint_id, since)
    return Replayed(task_ids=task_ids, count=len(task_ids))
