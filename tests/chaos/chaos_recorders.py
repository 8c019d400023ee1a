"""The chaos suite's two receivers, in the runner's event loop, on 127.0.0.1.

- :class:`SmtpRecorder`: an SMTP relay (aiosmtpd) that accepts every message and records
  its ``Message-ID``, recipient and arrival time; :meth:`SmtpRecorder.down` stops
  listening (new connections are refused, as from a relay that is down), :meth:`up`
  listens again on the same port.
- :class:`WebhookReceiver`: an HTTP endpoint (aiohttp) that verifies every request with
  the third-party ``standardwebhooks`` package, records it by ``webhook-id`` with the
  status it answered and when, and can answer 500 for a while or take 17 s for some
  requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: str
    at: float  # s since the epoch, when the DATA was accepted


class SmtpRecorder:
    """An SMTP relay that records every message it accepts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mails: list[Mail] = []
        self._server: asyncio.Server | None = None
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line a command

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        headers = BytesHeaderParser().parsebytes(content)
        message_id = str(headers.get("Message-ID", "")).strip()
        now = time.time()
        for recipient in envelope.rcpt_tos:
            self.mails.append(Mail(message_id, recipient.lower(), now))
        return "250 2.0.0 OK: recorded"

    async def up(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="chaos-relay", ident="riverbed chaos relay"),
            HOST,
            self.port,
            reuse_address=True,
        )

    async def down(self) -> None:
        """Stop listening: new connections are refused; a session already open ends as
        it would have (a relay going down between two messages)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def listening(self) -> bool:
        return self._server is not None


@dataclass(frozen=True)
class Hook:
    webhook_id: str
    event_type: str
    event_id: str
    data: dict[str, Any]
    status: int  # what the receiver answered
    arrived: float  # s since the epoch
    answered: float  # s since the epoch
    verified: bool


class WebhookReceiver:
    """A Standard Webhooks receiver that checks every signature and records every request."""

    def __init__(self, port: int, *, sender_timeout_s: float) -> None:
        self.port = port
        self.sender_timeout_s = sender_timeout_s  # s; a 2xx later than this is "late"
        self.secret = ""
        self.hooks: list[Hook] = []
        self.signature_failures = 0
        self.failing = False  # answer 500 to everything
        self.slow_every = 0  # while > 0, every n-th request takes slow_s before its 200
        self.slow_s = 17.0  # s; longer than the sender's 15 s request timeout
        self.in_flight = 0
        self._count = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        await web.SockSite(self._runner, sock, shutdown_timeout=1.0).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        self.in_flight += 1
        try:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            verified = True
            try:
                Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError:
                verified = False
                self.signature_failures += 1
            payload = _json_object(body)
            self._count += 1
            if not verified:
                status = 400
            elif self.failing:
                status = 500
            else:
                status = 200
                if self.slow_every and self._count % self.slow_every == 0:
                    await asyncio.sleep(self.slow_s)
            data = payload.get("data")
            self.hooks.append(
                Hook(
                    webhook_id=headers.get("webhook-id", ""),
                    event_type=str(payload.get("type", "")),
                    event_id=str(payload.get("id", "")),
                    data=data if isinstance(data, dict) else {},
                    status=status,
                    arrived=arrived,
                    answered=time.time(),
                    verified=verified,
                )
            )
            return web.Response(status=status)
        finally:
            self.in_flight -= 1

    def late(self, hook: Hook) -> bool:
        return hook.answered - hook.arrived >= self.sender_timeout_s


def _json_object(body: bytes) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        found = json.loads(body)
        if isinstance(found, dict):
            return found
    return {}
