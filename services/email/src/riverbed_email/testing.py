"""A real SMTP server for tests, scripted per recipient: :class:`ScriptedSmtpServer`.

aiosmtpd on a free loopback port, in the test's event loop. Each recipient address has
a script of behaviours, one per attempt (the last one repeats); unscripted addresses
get ``"250"``. A behaviour is:

- ``"250"``: accepted — the message is recorded in :attr:`ScriptedSmtpServer.received`;
- a reply such as ``"451 4.7.1 try later"`` or ``"550 5.1.1 no such user"`` (a bare
  code gets a stock text), given in answer to ``RCPT TO``;
- ``"drop"``: the connection is closed in answer to ``RCPT TO``, without a reply;
- ``"hang"``: no answer to ``RCPT TO`` until the server stops (client timeouts);
- ``"data:<reply>"``: ``RCPT TO`` is accepted, ``<reply>`` answers the message data;
- ``"data:drop"``: the message is received and recorded, then the connection is closed
  before the reply — the relay has the mail, the client does not know it;
- ``"data:hold"``: the message is received, and the 250 waits until
  :meth:`ScriptedSmtpServer.release_held` (or stop); the mail is recorded as it is
  accepted. :attr:`ScriptedSmtpServer.held` counts the messages that reached the hold.

Also STARTTLS or implicit TLS (pass an ``ssl.SSLContext``) and AUTH (``credentials``).
Used by the email service's own tests and by cross-service tests that need a mailbox.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_STOCK_TEXT = {
    "250": "2.1.5 OK",
    "421": "4.7.0 too many connections, slow down",
    "450": "4.2.1 mailbox busy",
    "451": "4.7.1 greylisted, try again later",
    "452": "4.5.3 too many recipients",
    "550": "5.1.1 no such user",
    "552": "5.2.2 mailbox full",
    "554": "5.7.1 message refused by policy",
}


def _reply(behaviour: str) -> str:
    behaviour = behaviour.strip()
    if behaviour.isdigit():
        return f"{behaviour} {_STOCK_TEXT.get(behaviour, 'scripted reply')}"
    return behaviour


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    authenticated_as: str | None = None
    tls: bool = False

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class ScriptedSmtpServer:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, known after start()
    starttls: ssl.SSLContext | None = None  # offer (and require) STARTTLS
    implicit_tls: ssl.SSLContext | None = None  # TLS from the first byte (port 465 style)
    credentials: dict[str, str] | None = None  # require AUTH with one of these
    script: dict[str, list[str]] = field(default_factory=dict)
    received: list[ReceivedMail] = field(default_factory=list)
    attempts: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: set by stop(): "hang" behaviours end, so the server can close
    released: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    #: set by release_held() or stop(): "data:hold" replies go out
    hold_released: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    held: int = field(init=False, default=0)  # messages that reached a "data:hold"
    _server: asyncio.Server | None = field(init=False, default=None)

    # -- scripting -------------------------------------------------------------------

    def on(self, address: str, *behaviours: str) -> None:
        """Answer ``address`` with ``behaviours``, one per attempt; the last one repeats."""
        self.script[address.lower()] = list(behaviours)

    def behaviour_for(self, address: str) -> str:
        key = address.lower()
        attempt = self.attempts[key]
        self.attempts[key] += 1
        steps = self.script.get(key) or ["250"]
        return steps[min(attempt, len(steps) - 1)]

    def release_held(self) -> None:
        """Answer 250 to every held message, and to those that reach the hold later."""
        self.hold_released.set()

    def messages_to(self, address: str) -> list[ReceivedMail]:
        return [m for m in self.received if address.lower() in (r.lower() for r in m.rcpt_tos)]

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> ScriptedSmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self.host, self.port, ssl=self.implicit_tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.released.set()
        self.hold_released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _protocol(self) -> SMTP:
        options: dict[str, Any] = {}
        if self.credentials is not None:
            options.update(
                auth_required=True,
                auth_require_tls=self.starttls is not None or self.implicit_tls is not None,
                authenticator=self._authenticate,
            )
        return SMTP(
            _Handler(self),
            hostname="scripted.test",
            ident="scripted smtp",
            tls_context=self.starttls,
            require_starttls=self.starttls is not None,
            **options,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and self.credentials is not None:
            user, password = data.login.decode(), data.password.decode()
            if self.credentials.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class _Handler:
    def __init__(self, owner: ScriptedSmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        behaviour = self.owner.behaviour_for(address)
        if behaviour == "drop":
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 closing"  # never reaches the client: the transport is closed
        if behaviour == "hang":
            await self.owner.released.wait()
            return "421 4.4.2 shutting down"
        after_data = "250"
        if behaviour.startswith("data:"):
            after_data = behaviour.removeprefix("data:")
            behaviour = "250"
        if behaviour.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            # aiosmtpd's Envelope takes extra attributes; the DATA hook reads this one
            envelope.after_data = after_data  # type: ignore[attr-defined]
        return _reply(behaviour)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        after_data: str = getattr(envelope, "after_data", "250")
        content = envelope.original_content or b""
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            authenticated_as=session.auth_data if isinstance(session.auth_data, str) else None,
            tls=session.ssl is not None,
        )
        if after_data == "hold":
            self.owner.held += 1
            await self.owner.hold_released.wait()
            after_data = "250"
        if after_data == "drop":
            self.owner.received.append(mail)
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 closing"
        if after_data.startswith("2"):
            self.owner.received.append(mail)
            return "250 2.0.0 OK: queued"
        return _reply(after_data)
