"""A payment flows through three real services: a receipt is mailed, a merchant webhook signed.

``payment.succeeded`` -> payments (ledger; outbox) -> ``payment.recorded`` and
``email.requested`` -> the email service mails the receipt to an SMTP server on loopback,
and the webhooks service (subscribed to ``payment.recorded``) POSTs it, signed, to a
receiver on loopback that verifies the signature with the third-party
``standardwebhooks`` package.

Who asks for the receipt: the payments service, which queues ``email.requested.v1``
as a command in its outbox in the same transaction as the ledger write (its event id
derives from the ledger transaction, so a relayed copy is not mailed twice). The email
service stays generic: it knows nothing of payments.

All three services run in this process against the test Redis; every stream they use
is routed to a name with this test's token, their databases live in its tmp dir.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from riverbed import keys
from riverbed.publisher import Publisher
from riverbed.settings import RedisSettings
from riverbed.testing import fast_settings, wait_for
from riverbed_contracts import event_from_entry
from riverbed_email.bootstrap import create_service as create_email
from riverbed_email.settings import EmailSettings
from riverbed_email.testing import ScriptedSmtpServer
from riverbed_payments.bootstrap import create_service as create_payments
from riverbed_payments.settings import PaymentsSettings
from riverbed_payments.testing import succeeded
from riverbed_webhooks.bootstrap import create_service as create_webhooks
from riverbed_webhooks.settings import WebhooksSettings

pytestmark = pytest.mark.integration

KEY = "flow-test-key"
PAYMENT_STREAMS = (
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "payment.dispute.opened",
    "payment.dispute.closed",
    "payment.payout.paid",
    "payment.recorded",
    "payment.refund.recorded",
    "payment.reconciliation.completed",
    "payment.reconciliation.mismatch",
    "email.requested",
)
WEBHOOK_STREAMS = (
    "webhook.delivery.requested",
    "webhook.delivery.succeeded",
    "webhook.delivery.exhausted",
    "webhook.endpoint.disabled",
)


@pytest.fixture
async def smtp() -> AsyncIterator[ScriptedSmtpServer]:
    server = await ScriptedSmtpServer().start()
    try:
        yield server
    finally:
        await server.stop()


class Merchant:
    """An HTTP receiver on 127.0.0.1 that keeps every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


@pytest.fixture
async def merchant() -> AsyncIterator[Merchant]:
    found = Merchant()
    app = web.Application()
    app.router.add_post("/hooks", found.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    found.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"
    try:
        yield found
    finally:
        await runner.cleanup()


@pytest.fixture
async def services(
    redis_url: str, unique: str, tmp_path: Path, smtp: ScriptedSmtpServer
) -> AsyncIterator[dict[str, Any]]:
    routes = {s: f"{s}.t{unique}" for s in PAYMENT_STREAMS}
    redis_settings = RedisSettings(url=redis_url)
    payments = create_payments(
        PaymentsSettings(
            api_key=KEY,
            log_format="json",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'payments.db'}",
            stream_routes=routes,
            outbox_poll_interval_s=0.05,
        ),
        redis_settings=redis_settings,
        consumer_settings=fast_settings(),
    )
    email = create_email(
        EmailSettings(
            log_format="json",
            stream=routes["email.requested"],
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security="none",
            smtp_timeout_s=5.0,
            smtp_local_hostname="flow.test",
            from_address="Riverbed <receipts@riverbed.test>",
        ),
        redis_settings=redis_settings,
        consumer_settings=fast_settings(),
    )
    webhooks = create_webhooks(
        WebhooksSettings(
            api_key=KEY,
            log_format="json",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'webhooks.db'}",
            source_streams=[routes["payment.recorded"]],
            stream_routes={s: f"{s}.t{unique}" for s in WEBHOOK_STREAMS},
            cache_namespace=f"flow-{unique}",
            allowed_networks=["127.0.0.1/32"],
            retry_schedule_ms=[20, 20],
            request_timeout_s=2.0,
        ),
        redis_settings=redis_settings,
        consumer_settings=fast_settings(),
    )
    started = []
    try:
        for service in (payments, email, webhooks):
            await service.start()
            started.append(service)
        yield {"payments": payments, "email": email, "webhooks": webhooks, "routes": routes}
    finally:
        for service in reversed(started):
            await service.stop()


async def test_a_recorded_payment_mails_a_receipt_and_sends_a_signed_merchant_webhook(
    services: dict[str, Any],
    smtp: ScriptedSmtpServer,
    merchant: Merchant,
    redis_client: redis.asyncio.Redis,
    unique: str,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=services["webhooks"].app),
        base_url="http://webhooks",
        headers={"Authorization": f"Bearer {KEY}"},
    ) as client:
        answer = await client.post(
            "/v1/endpoints", json={"url": merchant.url, "event_types": ["payment.recorded.v1"]}
        )
    assert answer.status_code == 201, answer.text
    secret = answer.json()["secret"]

    to = f"ada-{unique}@example.com"
    event = succeeded(
        f"pi_{unique}", 4999, fee_amount=175, receipt_email=to, description="Order 42"
    )
    routes = services["routes"]
    await Publisher(redis_client).publish(event, stream=routes["payment.succeeded"])

    await wait_for(lambda: smtp.messages_to(to), timeout=30, what="the receipt in the mailbox")
    await wait_for(lambda: merchant.requests, timeout=30, what="the merchant's webhook")

    [mail] = smtp.messages_to(to)
    assert mail.message["Subject"] == "Your receipt: 49.99 EUR"
    body = mail.message.get_body(("plain",))
    assert body is not None
    assert "Order 42" in body.get_content()
    assert f"pi_{unique}" in body.get_content()

    [(headers, payload)] = merchant.requests
    verified = Webhook(secret).verify(payload, headers)  # raises unless the signature holds
    recorded = [
        event_from_entry(f)
        for _, f in await redis_client.xrange(keys.stream_key(routes["payment.recorded"]))
    ]
    assert [r.id for r in recorded] == [headers["webhook-id"]]
    assert verified["type"] == "payment.recorded.v1"
    assert verified["data"]["provider_payment_id"] == f"pi_{unique}"
    assert (verified["data"]["amount"], verified["data"]["net_amount"]) == (4999, 4824)

    # each once: nothing more arrives once both services have settled their streams
    async def settled(stream: str, group: str) -> bool:
        pending = await redis_client.xpending(keys.stream_key(stream), group)
        return int(pending["pending"]) == 0

    await wait_for(lambda: settled(routes["email.requested"], "email"), what="email settled")
    await wait_for(
        lambda: settled(f"webhook.delivery.requested.t{unique}", "webhooks"), what="delivered"
    )
    assert len(smtp.messages_to(to)) == 1
    assert len(merchant.requests) == 1
