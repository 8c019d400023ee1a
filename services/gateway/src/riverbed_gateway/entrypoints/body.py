"""Reading a request's JSON body, one way for every route that takes one (the ingestion
fast path, the ingestion routes, providers' webhooks).

Order of checks: content type (415), size (413, from ``Content-Length`` before reading, then
while reading), JSON (400; NaN and Infinity refused), numbers past the 64-bit float range
(422 ``number-out-of-range``), nesting deeper than ``MAX_JSON_DEPTH`` (422).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from riverbed.errors import RiverbedError
from riverbed.problems import Problem
from riverbed_contracts.envelope import MAX_JSON_DEPTH, nested_deeper_than


async def read_json_body(request: Request, max_bytes: int) -> tuple[bytes, Any]:
    """The body as sent (at most ``max_bytes``) and its JSON document; a problem otherwise."""
    headers = request.headers
    return await receive_json_body(
        request.receive, headers.get("content-type", ""), headers.get("content-length"), max_bytes
    )


async def receive_json_body(
    receive: Receive, content_type: str, content_length: str | None, max_bytes: int
) -> tuple[bytes, Any]:
    """The body as sent (at most ``max_bytes``) and its JSON document, straight from ASGI
    messages (the ingestion fast path builds no Request); a problem otherwise, and
    ``ClientDisconnect`` when the client goes away first."""
    check_declared(content_type, content_length, max_bytes)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body = message.get("body", b"")  # all of it at once, the usual case: no copy
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
        return body, decode_json(body)
    chunks = bytearray()
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] == "http.request":
            chunks += message.get("body", b"")
            if len(chunks) > max_bytes:
                raise _too_large(max_bytes)
            if not message.get("more_body", False):
                return bytes(chunks), decode_json(chunks)
        message = await receive()


def check_declared(content_type: str, content_length: str | None, max_bytes: int) -> None:
    """415 unless the content type is JSON; 413 when the declared length is over the cap."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Content-Type {content_type or '(none)'!r} is not accepted; send application/json",
            accepted=["application/json"],
        )
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise _too_large(max_bytes)


def decode_json(body: bytes | bytearray) -> Any:
    """``body`` as a JSON document; a 400 or 422 problem when it is not one readers agree on."""
    try:
        # what json.loads(body, …) does, with one decoder made at import, not one a call
        document = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except json.JSONDecodeError as error:
        raise _malformed(f"the body is not valid JSON: {error}") from None
    except _NotFinite as error:
        raise Problem(
            422,
            "number-out-of-range",
            "Number out of range",
            f"the body holds the number {error}, beyond what a 64-bit float holds: "
            "readers would turn it into infinity or null; send a finite number",
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise _malformed("the body is not valid JSON (or holds a number too long)") from None
    except RecursionError:
        raise _too_deep() from None
    if nested_deeper_than(document):
        raise _too_deep()
    return document


class _NotFinite(RiverbedError, ValueError):
    """A JSON number past the float range (``1e999``): json would read it as infinity."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text[:40])  # at most 40 characters of it in the problem's detail
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: the request bodies' JSON decoder: NaN and Infinity refused, numbers past the float range
#: too (_finite), made once (json.loads with any hook makes a new decoder every call)
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def _too_deep() -> Problem:
    return Problem(
        422,
        "nested-too-deeply",
        "Nested too deeply",
        f"the body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep; at most "
        f"{MAX_JSON_DEPTH} are accepted, so that every reader of the streams can decode it",
        max_depth=MAX_JSON_DEPTH,
    )


def _malformed(detail: str) -> Problem:
    return Problem(400, "malformed-json", "Malformed JSON", detail)


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Payload too large", f"the body exceeds {limit} bytes")
