"""Problem details and the Bearer-key dependency services put in front of their own API."""

from __future__ import annotations

from typing import Annotated

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


After = Annotated[
    int | None,
    problems.row_cursor_query(0, "a line number"),
    problems.row_cursor_check("after", 0, "a line number"),
]


async def test_a_row_cursor_out_of_range_is_a_422_stating_the_range_and_a_miss_a_404() -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/v1/lines")
    async def lines(after: After = None) -> dict[str, int | None]:
        return {"after": problems.found_or_404(after, "Unknown line", "no such line")}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/v1/lines?after=7")).json() == {"after": 7}
        refused = await http.get(f"/v1/lines?after={problems.MAX_ROW_ID + 1}")
        missing = await http.get("/v1/lines")
    assert refused.status_code == 422
    assert f"from 0 to {problems.MAX_ROW_ID}" in refused.json()["errors"][0]["msg"]
    assert missing.status_code == 404
    assert missing.json()["title"] == "Unknown line"
    parameter = app.openapi()["paths"]["/v1/lines"]["get"]["parameters"][0]
    assert parameter["schema"]["maximum"] == problems.MAX_ROW_ID


def test_responses_for_binds_a_services_statuses_and_schema() -> None:
    schema = problems.problem_schema()
    responses = problems.responses_for({404: "no such thing"}, schema)
    assert responses(404) == problems.problem_responses({404: "no such thing"}, schema, 404)
