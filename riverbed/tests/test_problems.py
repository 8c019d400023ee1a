"""Problem details and the Bearer-key dependency services put in front of their own API."""

from __future__ import annotations

import httpx
from fastapi import Depends, FastAPI

from riverbed import problems


def app_with_key(api_key: str | None) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    check = problems.bearer_key_check(api_key, setting="EXAMPLE_API_KEY")

    @app.get("/v1/thing", dependencies=[Depends(check)])
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def get(app: FastAPI, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get("/v1/thing", headers=headers)


async def test_the_right_key_passes_and_others_get_a_401_problem() -> None:
    app = app_with_key("s3cret")
    assert (await get(app, {"Authorization": "Bearer s3cret"})).json() == {"ok": "yes"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        refused = await get(app, headers)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == problems.PROBLEM_JSON
        assert refused.headers["www-authenticate"] == "Bearer"


async def test_without_a_configured_key_the_api_is_closed_and_says_which_setting() -> None:
    refused = await get(app_with_key(None), {"Authorization": "Bearer anything"})
    assert refused.status_code == 503
    assert "EXAMPLE_API_KEY" in refused.json()["detail"]


async def test_a_405_allows_every_method_of_the_path_not_only_its_first_route() -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/v1/things/{thing}")
    async def read(thing: str) -> dict[str, str]:
        return {"thing": thing}

    @app.delete("/v1/things/{thing}")
    async def remove(thing: str) -> dict[str, str]:
        return {"thing": thing}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        refused = await http.put("/v1/things/a")
    assert refused.status_code == 405
    assert refused.headers["content-type"] == problems.PROBLEM_JSON
    assert refused.headers["allow"] == "DELETE, GET"
