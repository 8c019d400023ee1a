"""``GET /asyncapi``: the streams and event types, for whoever integrates with them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from riverbed.schemas import asyncapi_document

router = APIRouter()


@router.get("/asyncapi", tags=["contracts"], summary="AsyncAPI document of every stream")
async def asyncapi() -> dict[str, Any]:
    """Read-only: the streams and event types this gateway accepts, as AsyncAPI 3.0."""
    return asyncapi_document()
