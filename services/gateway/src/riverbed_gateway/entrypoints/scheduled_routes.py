"""``GET`` and ``DELETE /v1/scheduled/{event_id}``: look up or cancel an event kept for later.

Authenticated like publishing (the same API keys, 401) and scoped like it: a key sees and
cancels only the delayed events it published, of types its scopes allow; anything else is
answered 404, exactly as an unknown id. How events are found and cancelled:
:mod:`riverbed_gateway.service_layer.scheduled_events`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from riverbed_gateway.domain.api_keys import ApiKey
from riverbed_gateway.domain.delivery import rfc3339
from riverbed_gateway.entrypoints.dependencies import ScheduledEventsDep
from riverbed_gateway.entrypoints.problems import ERRORS
from riverbed_gateway.service_layer.scheduled_events import ScheduledEvents


class ScheduledEvent(BaseModel):
    """An event kept for later, as its publisher may see it."""

    id: str = Field(description="the id it was looked up by: the client's own, or the event id")
    event_id: str = Field(description="the CloudEvent id (as the 202's event_id)")
    stream: str
    state: Literal["scheduled", "promoted"] = Field(
        description="scheduled: waiting; promoted: appended to its stream (remembered 7 days)"
    )
    deliver_at: AwareDatetime | None = Field(
        description="when it is due (RFC 3339, UTC, ms); null once promoted"
    )
    event: dict[str, Any] | None = Field(
        description="the CloudEvent as it will be appended; null once promoted"
    )


async def scheduled_key(request: Request, scheduled: ScheduledEvents) -> ApiKey:
    """The API key the request presents (401 otherwise): the one the events belong to."""
    return await scheduled.authenticate(request.headers.get("authorization"))


#: the path parameter, documented by hand: declared as an argument, FastAPI would also
#: document a 422 that no request can get (any text is an id to look up)
_EVENT_ID_PARAMETER: Final = {
    "parameters": [
        {
            "name": "event_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "the id the 202 gave: your own id when you gave one, else the event id",
        }
    ]
}


router = APIRouter(tags=["events"])
_PROBLEM: Final = ERRORS[400]  # every problem response has the same schema


@router.get(
    "/v1/scheduled/{event_id:path}",
    response_model=ScheduledEvent,
    responses={
        200: {"description": "the key's event, waiting (scheduled) or lately promoted"},
        401: {**_PROBLEM, "description": "no or unknown API key"},
        404: {
            **_PROBLEM,
            "description": "no such event of this key's (never kept, cancelled, another "
            "key's or type outside its scopes, or promoted more than 7 days ago)",
        },
        503: {**_PROBLEM, "description": "Redis cannot be reached"},
    },
    openapi_extra=_EVENT_ID_PARAMETER,
    summary="Look up an event kept for later",
)
async def get_scheduled(request: Request, scheduled: ScheduledEventsDep) -> JSONResponse:
    """Authenticated and scoped like publishing: only the key that published the event,
    and only within its scopes, sees it."""
    event_id = request.path_params["event_id"]
    key = await scheduled_key(request, scheduled)
    delayed = await scheduled.look_up(key, event_id)
    body = {
        "id": event_id,
        "event_id": delayed.event_id,
        "stream": delayed.stream,
        "state": delayed.state,
        "deliver_at": (
            rfc3339(round(delayed.deliver_at.timestamp() * 1000))
            if delayed.deliver_at is not None
            else None
        ),
        "event": delayed.event,
    }  # the shape of ScheduledEvent
    return JSONResponse(body)


@router.delete(
    "/v1/scheduled/{event_id:path}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "cancelled: it will never be appended to its stream"},
        401: {**_PROBLEM, "description": "no or unknown API key"},
        404: {**_PROBLEM, "description": "no such event of this key's (as for GET)"},
        409: {
            **_PROBLEM,
            "description": "already delivered: it was appended to its stream (once)",
        },
        503: {
            **_PROBLEM,
            "description": "Redis cannot be reached; retry (a cancel that went through "
            "answers 404 then)",
        },
    },
    openapi_extra=_EVENT_ID_PARAMETER,
    summary="Cancel an event kept for later",
)
async def cancel_scheduled(request: Request, scheduled: ScheduledEventsDep) -> Response:
    """Atomic against promotion: either cancelled and never delivered (204), or already
    delivered, exactly once (409)."""
    key = await scheduled_key(request, scheduled)
    await scheduled.withdraw(key, request.path_params["event_id"])
    return Response(status_code=204)
