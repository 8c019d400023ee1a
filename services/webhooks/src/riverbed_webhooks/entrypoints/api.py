"""The management API: endpoints, their secrets, the delivery log, replays.

Every route needs ``Authorization: Bearer <WEBHOOKS_API_KEY>``, an admin key of its own
(never the gateway's ingestion key): the API hands out signing secrets and decides where
this service sends requests.
Secrets appear in a response only when created or rotated.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security, status
from fastapi.security import HTTPBearer

from riverbed.problems import bearer_key_check
from riverbed_webhooks.domain.model import DeliveryStatus
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
from riverbed_webhooks.service_layer.endpoints import EndpointManager, EndpointSpec
from riverbed_webhooks.service_layer.ports import Clock, DeliveryLog
from riverbed_webhooks.service_layer.replay import Replayer


class ApiContext(Protocol):
    """What the routes need, provided by the composition root once the service has started."""

    @property
    def manager(self) -> EndpointManager: ...

    @property
    def replayer(self) -> Replayer: ...

    @property
    def delivery_log(self) -> DeliveryLog: ...

    @property
    def clock(self) -> Clock: ...


def _started(request: Request) -> ApiContext:
    """The wired dependencies (``app.state.webhooks_context()``), or 503 while starting."""
    provider: Callable[[], ApiContext | None] = request.app.state.webhooks_context
    found = provider()
    if found is None:
        raise Problem(
            503, "starting", "Service starting", "the service is not ready; retry shortly",
            headers={"Retry-After": "1"},
        )  # fmt: skip
    return found


Ctx = Annotated[ApiContext, Depends(_started)]
#: path parameters, as long as the columns that hold them (longer: 422, not a lookup)
EndpointId = Annotated[str, Path(min_length=1, max_length=64, description="ep_…")]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64, description="dlv_…")]
EventId = Annotated[str, Path(min_length=1, max_length=255, description="the event's id")]
#: a route with path parameters also answers 404 (unknown id, or no route at the path)
FOUND = problem_responses(404)
#: documents the scheme; authorized() below decides (this one refuses nothing itself)
BEARER = HTTPBearer(auto_error=False, description="WEBHOOKS_API_KEY, the admin key")


def router(api_key: str | None) -> APIRouter:
    """The /v1 routes; the app must set ``app.state.webhooks_context`` (see bootstrap)."""

    authorized = bearer_key_check(api_key, setting="WEBHOOKS_API_KEY")

    api = APIRouter(
        prefix="/v1",
        tags=["webhooks"],
        dependencies=[Security(BEARER), Depends(authorized)],
        # every route: the key, validation (each has parameters or a body), availability
        responses=problem_responses(401, 422, 503),
    )

    @api.post(
        "/endpoints",
        status_code=status.HTTP_201_CREATED,
        summary="Register an endpoint",
        responses=problem_responses(400),
    )
    async def create_endpoint(body: EndpointIn, ctx: Ctx) -> EndpointWithSecret:
        """The new endpoint, with its signing secret: shown this once."""
        endpoint = await ctx.manager.create(
            EndpointSpec(
                url=body.url,
                description=body.description,
                event_types=body.event_types,
                rate_limit_per_s=body.rate_limit_per_s,
                max_concurrency=body.max_concurrency,
            )
        )
        out = EndpointOut.of(endpoint, ctx.clock())
        return EndpointWithSecret(**out.model_dump(), secret=endpoint.secret)

    @api.get("/endpoints", summary="List endpoints (by id, paged)")
    async def list_endpoints(
        ctx: Ctx,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        after: Annotated[str | None, Query(max_length=64)] = None,
    ) -> EndpointList:
        page = await ctx.manager.repository.page(limit=limit, after=after)
        now = ctx.clock()
        return EndpointList(
            data=[EndpointOut.of(e, now) for e in page],
            next_after=page[-1].id if len(page) == limit else None,
        )

    @api.get(
        "/endpoints/{endpoint_id}", summary="One endpoint (without its secret)", responses=FOUND
    )
    async def get_endpoint(endpoint_id: EndpointId, ctx: Ctx) -> EndpointOut:
        return EndpointOut.of(await ctx.manager.get(endpoint_id), ctx.clock())

    @api.patch(
        "/endpoints/{endpoint_id}",
        summary="Change an endpoint's settings",
        responses=problem_responses(400, 404),
    )
    async def update_endpoint(
        endpoint_id: EndpointId, body: EndpointPatch, ctx: Ctx
    ) -> EndpointOut:
        given = body.model_fields_set
        endpoint = await ctx.manager.update(
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
        return EndpointOut.of(endpoint, ctx.clock())

    @api.post(
        "/endpoints/{endpoint_id}/disable",
        summary="Stop deliveries to an endpoint",
        responses=FOUND,
    )
    async def disable_endpoint(endpoint_id: EndpointId, ctx: Ctx) -> EndpointOut:
        return EndpointOut.of(await ctx.manager.disable(endpoint_id), ctx.clock())

    @api.post(
        "/endpoints/{endpoint_id}/enable",
        summary="Resume deliveries to an endpoint",
        responses=FOUND,
    )
    async def enable_endpoint(endpoint_id: EndpointId, ctx: Ctx) -> EndpointOut:
        return EndpointOut.of(await ctx.manager.enable(endpoint_id), ctx.clock())

    @api.delete(
        "/endpoints/{endpoint_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="Delete an endpoint (its delivery log stays)",
        responses=FOUND,
    )
    async def delete_endpoint(endpoint_id: EndpointId, ctx: Ctx) -> Response:
        await ctx.manager.delete(endpoint_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @api.post(
        "/endpoints/{endpoint_id}/secret/rotate",
        summary="Rotate the signing secret",
        responses=problem_responses(400, 404),
    )
    async def rotate_secret(
        endpoint_id: EndpointId, ctx: Ctx, body: RotateIn | None = None
    ) -> SecretOut:
        """A new secret, shown this once; the old one still signs during the grace period."""
        grace = None
        if body is not None and body.grace_period_s is not None:
            grace = timedelta(seconds=body.grace_period_s)
        endpoint = await ctx.manager.rotate_secret(endpoint_id, grace)
        return SecretOut(
            secret=endpoint.secret,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
        )

    @api.get(
        "/endpoints/{endpoint_id}/attempts",
        summary="Delivery log of an endpoint, newest first",
        responses=FOUND,
    )
    async def endpoint_attempts(
        endpoint_id: EndpointId,
        ctx: Ctx,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before: BeforeAttempt = None,
    ) -> AttemptList:
        found = await ctx.delivery_log.attempts_for_endpoint(
            endpoint_id, limit=limit, before=before
        )
        return AttemptList(
            data=[AttemptOut.of(a) for a in found],
            next_before=found[-1].id if len(found) == limit else None,
        )

    @api.get(
        "/endpoints/{endpoint_id}/deliveries",
        summary="Deliveries of an endpoint, newest first",
        responses=FOUND,
    )
    async def endpoint_deliveries(
        endpoint_id: EndpointId,
        ctx: Ctx,
        status: Annotated[list[DeliveryStatus] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> DeliveryList:
        found = await ctx.delivery_log.deliveries_for_endpoint(
            endpoint_id, limit=limit, status=status or ()
        )
        return DeliveryList(data=[DeliveryOut.of(d) for d in found])

    @api.get(
        "/events/{event_id}/attempts",
        summary="Delivery log of an event, oldest first",
        responses=FOUND,
    )
    async def event_attempts(
        event_id: EventId, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=1000)] = 500
    ) -> AttemptList:
        found = await ctx.delivery_log.attempts_for_event(event_id, limit=limit)
        return AttemptList(data=[AttemptOut.of(a) for a in found], next_before=None)

    @api.get(
        "/events/{event_id}/deliveries",
        summary="Deliveries of an event, one per endpoint",
        responses=FOUND,
    )
    async def event_deliveries(event_id: EventId, ctx: Ctx) -> DeliveryList:
        found = await ctx.delivery_log.deliveries_for_event(event_id)
        return DeliveryList(data=[DeliveryOut.of(d) for d in found])

    @api.get("/deliveries/{delivery_id}", summary="One delivery", responses=FOUND)
    async def get_delivery(delivery_id: DeliveryId, ctx: Ctx) -> DeliveryOut:
        found = await ctx.delivery_log.get_delivery(delivery_id)
        if found is None:
            raise Problem(404, "not-found", "Unknown delivery", f"no delivery {delivery_id!r}")
        return DeliveryOut.of(found)

    @api.post(
        "/deliveries/{delivery_id}/replay",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Deliver one delivery again",
        responses=problem_responses(404, 409),
    )
    async def replay_delivery(delivery_id: DeliveryId, ctx: Ctx) -> Replayed:
        task_id = await ctx.replayer.replay(delivery_id)
        return Replayed(task_ids=[task_id], count=1)

    @api.post(
        "/endpoints/{endpoint_id}/replay",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Deliver again every failed delivery of an endpoint since a time",
        responses=problem_responses(400, 404, 409),
    )
    async def replay_failed(endpoint_id: EndpointId, body: ReplayIn, ctx: Ctx) -> Replayed:
        since: datetime = body.since
        if since.tzinfo is None:
            raise Problem(
                422, "invalid-request", "Invalid request",
                "since needs a time zone offset (RFC 3339), e.g. 2024-05-01T00:00:00Z",
            )  # fmt: skip
        task_ids = await ctx.replayer.replay_failed(endpoint_id, since)
        return Replayed(task_ids=task_ids, count=len(task_ids))

    return api
