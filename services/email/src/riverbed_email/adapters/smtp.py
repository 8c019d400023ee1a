"""The ``EmailSender`` (``service_layer.ports``) that talks SMTP, with aiosmtplib.

One connection per message, one recipient per message: a refusal is then about that
one address, and a slow or broken relay holds up one request, not a batch. Every way a
send can end is reported as an :class:`SmtpResult` (see ``domain.smtp_replies``);
nothing from the SMTP conversation is raised to the caller. Failing to say goodbye
(``QUIT``) after the relay accepted the message is not a failure: the message is the
relay's by then, and ``QUIT`` runs in the background so that the send is reported (and
recorded) at once.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiosmtplib
import structlog
from opentelemetry.trace import Status, StatusCode

from riverbed import tracing
from riverbed_email.domain.compose import OutgoingEmail
from riverbed_email.domain.smtp_replies import SmtpResult, Stage
from riverbed_email.settings import EmailSettings

log = structlog.get_logger(__name__)


def result_of_transaction(
    recipient: str, refused: dict[str, aiosmtplib.SMTPResponse], data_reply: str
) -> SmtpResult:
    """The result of a ``sendmail`` that returned rather than raised.

    aiosmtplib returns normally as long as *one* recipient was accepted, listing the
    refused ones in a dict instead of raising: with one recipient per message that
    cannot happen, but if the dict ever names ours, it was refused, not sent.
    """
    refusal = refused.get(recipient)
    if refusal is None and refused:
        # matched case-insensitively: servers may echo the address in another case
        lowered = {address.lower(): reply for address, reply in refused.items()}
        refusal = lowered.get(recipient.lower())
    if refusal is not None:
        return SmtpResult(refusal.code, refusal.message, "rcpt")
    return SmtpResult(250, data_reply, "data")


def result_of_error(error: Exception, stage: Stage) -> SmtpResult:
    """The result of an aiosmtplib exception raised during ``stage``."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        first = error.recipients[0] if error.recipients else None
        if first is None:
            return SmtpResult(None, "every recipient refused", "rcpt")
        return SmtpResult(first.code, first.message, "rcpt")
    if isinstance(error, aiosmtplib.SMTPSenderRefused):
        return SmtpResult(error.code, error.message, "mail")
    if isinstance(error, aiosmtplib.SMTPDataError):
        return SmtpResult(error.code, error.message, "data")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return SmtpResult(error.code, error.message, stage)
    if isinstance(error, aiosmtplib.SMTPTimeoutError):
        return SmtpResult(None, f"timed out: {error}", stage)
    if isinstance(error, aiosmtplib.SMTPServerDisconnected):
        return SmtpResult(None, f"connection dropped: {error}", stage)
    if isinstance(error, aiosmtplib.SMTPConnectError):
        return SmtpResult(None, f"could not connect: {error}", stage)
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return SmtpResult(None, f"TLS failed: {error}", stage)
    if isinstance(error, aiosmtplib.SMTPException | OSError | TimeoutError):
        return SmtpResult(None, f"{type(error).__name__}: {error}", stage)
    raise error


class SmtpSender:
    """Sends through the relay configured in ``EMAIL_SMTP_*``."""

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        self._local_hostname = settings.smtp_local_hostname
        self._tls_context: ssl.SSLContext | None = None
        self._closing: set[asyncio.Task[None]] = set()  # QUITs under way (strong references)

    async def send(self, email: OutgoingEmail) -> SmtpResult:
        """Send ``email``, in a span of its own when tracing is on."""
        with tracing.client_span(
            "smtp send",
            {
                "server.address": self.settings.smtp_host,
                "server.port": self.settings.effective_smtp_port,
            },
        ) as span:
            result = await self._send(email)
            if span.is_recording():
                span.set_attribute("riverbed.smtp.stage", result.stage)
                if result.code is not None:
                    span.set_attribute("riverbed.smtp.reply_code", result.code)
                if result.code is None or result.code >= 400:
                    span.set_status(Status(StatusCode.ERROR, result.describe()))
            return result

    async def _send(self, email: OutgoingEmail) -> SmtpResult:
        client = await self._client()
        stage: Stage = "connect"
        try:
            await client.connect()
            stage = "transaction"
            refused, data_reply = await client.sendmail(
                email.sender, [email.recipient], email.as_bytes()
            )
            return result_of_transaction(email.recipient, refused, data_reply)
        except ssl.SSLError as error:  # before ValueError: certificate errors are both
            return result_of_error(error, stage)
        except ValueError as error:
            if stage != "transaction":
                raise  # a configuration error: not this email's fault, so not a rejection
            # aiosmtplib refuses, before sending anything, an address it cannot express
            return SmtpResult(None, f"address cannot be sent: {error}", "address")
        except Exception as error:
            return result_of_error(error, stage)
        finally:
            # QUIT in the background: the caller records an accepted send as soon as the
            # 2xx is in, not one more round trip later (the README's duplicate window)
            closing = asyncio.create_task(self._close(client))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Wait for the QUITs under way (each is bounded by a timeout)."""
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _close(self, client: aiosmtplib.SMTP) -> None:
        if not client.is_connected:
            return
        try:
            await client.quit(timeout=min(self.settings.smtp_timeout_s, 10.0))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            log.debug("QUIT failed; connection closed anyway", error=str(error))
            client.close()

    async def _client(self) -> aiosmtplib.SMTP:
        settings = self.settings
        if self._local_hostname is None:
            # getfqdn may query DNS: once per process, in a thread, not once per mail
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.effective_smtp_port,
            use_tls=settings.smtp_security == "tls",
            start_tls=settings.smtp_security == "starttls",
            username=settings.smtp_username,
            password=password,
            timeout=settings.smtp_timeout_s,
            local_hostname=self._local_hostname,
            tls_context=self._tls(),
        )

    def _tls(self) -> ssl.SSLContext | None:
        settings = self.settings
        if settings.smtp_security == "none":
            return None
        if self._tls_context is None:
            context = ssl.create_default_context(
                cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            )
            if not settings.smtp_validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_context = context
        return self._tls_context
