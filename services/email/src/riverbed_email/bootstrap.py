"""The composition root: settings in, a wired :class:`~riverbed.service.Service` out.

:func:`lifespan` opens what the email service needs beyond the runtime's Redis — a small
pool of its own for outcome records — wires the adapters over open clients and yields a
:class:`Container`; after the drain it names the records Redis never took, then closes
that pool. Tests pass their own Redis and consumer settings and, for unit-level wiring,
their own sender.

The email service counts attempts itself (``EMAIL_MAX_ATTEMPTS``); the runtime's limit is
that plus :data:`~riverbed_email.service_layer.delivery.GRACE_DELIVERIES`, so a last
attempt cut off before its outcome was out is delivered once more and gives up with
``email.failed``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

from riverbed.backoff import Backoff
from riverbed.connection import Redis, connect
from riverbed.lifespan import Resources
from riverbed.service import Service
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_email.adapters.records import Recorder
from riverbed_email.adapters.redis_stores import (
    RedisDomainThrottle,
    RedisSendLedger,
    RedisSuppressionList,
)
from riverbed_email.adapters.smtp import SmtpSender
from riverbed_email.adapters.templates import TemplateRenderer
from riverbed_email.domain.addresses import DomainLabels
from riverbed_email.domain.compose import Unsubscribe
from riverbed_email.entrypoints.handlers import EmailRequestedHandler
from riverbed_email.service_layer.delivery import GRACE_DELIVERIES, Delivery, DeliveryPolicy
from riverbed_email.service_layer.ports import EmailSender
from riverbed_email.settings import EmailSettings

#: ± fraction of each SMTP retry delay, so a burst of deferrals does not retry in lockstep
RETRY_JITTER = 0.1

#: connections of the outcome records' own pool: their one writer (adapters.records)
#: never waits for a connection of the shared pool, which hundreds of handlers' other
#: commands and the blocking reads hold; under a burst that wait was most of the window in
#: which a kill -9 sends twice (see the README). 2: one in use, one spare after a drop
RECORD_CONNECTIONS = 2


@dataclass(frozen=True)
class Container:
    """What the email service runs on while started."""

    delivery: Delivery  # the use case
    handler: EmailRequestedHandler  # the consumer of settings.stream


def delivery_policy(settings: EmailSettings) -> DeliveryPolicy:
    """What the use case is told by the settings."""
    unsubscribe = None
    if settings.unsubscribe_url is not None:
        secret = settings.unsubscribe_secret
        unsubscribe = Unsubscribe(
            settings.unsubscribe_url, secret.get_secret_value().encode() if secret else None
        )
    return DeliveryPolicy(
        from_address=settings.from_address,
        envelope_sender=settings.envelope_sender,
        message_id_domain=settings.effective_message_id_domain,
        max_attempts=settings.max_attempts,
        rate_limit_max_wait_ms=settings.rate_limit_max_wait_ms,
        unsubscribe=unsubscribe,
        send_lease_ms=settings.send_lease_s * 1000,
    )


def wire_delivery(
    settings: EmailSettings,
    resources: Resources,
    *,
    records_redis: Redis,
    sender: EmailSender,
) -> Delivery:
    """The use case over Redis (``records_redis``: the outcome records' own pool)."""
    redis = resources.redis
    return Delivery(
        delivery_policy(settings),
        renderer=TemplateRenderer(settings.templates_dir),
        sender=sender,
        suppressions=RedisSuppressionList(redis),
        ledger=RedisSendLedger(redis, ttl_s=settings.sent_marker_ttl_s),
        recorder=Recorder(RedisSendLedger(records_redis, ttl_s=settings.sent_marker_ttl_s)),
        throttle=RedisDomainThrottle(
            redis,
            per_second=settings.domain_rate_per_s,
            burst=settings.domain_burst,
            slowdown_window_s=settings.slowdown_window_s,
            max_level=settings.slowdown_max_level,
        ),
        publish=resources.publisher.publish_many,
        domain_labels=DomainLabels(settings.metrics_domains),
    )


@contextlib.asynccontextmanager
async def lifespan(
    settings: EmailSettings, resources: Resources, *, sender: EmailSender | None = None
) -> AsyncIterator[Container]:
    """Open the records' own pool, wire the use case, yield; after the drain, name the
    records Redis never took, then close the pool. ``sender`` replaces the relay (tests)."""
    pool_settings = resources.redis_settings.model_copy(
        update={"max_connections": RECORD_CONNECTIONS}
    )
    records_redis = connect(pool_settings)
    try:
        delivery = wire_delivery(
            settings,
            resources,
            records_redis=records_redis,
            sender=sender or SmtpSender(settings),
        )
        try:
            yield Container(delivery, EmailRequestedHandler(delivery))
        finally:
            # after the drain, which let handlers waiting for Redis finish within the
            # shutdown timeout: what is still unrecorded can only be logged
            await delivery.close()
    finally:
        await records_redis.aclose()


def create_service(
    settings: EmailSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    sender: EmailSender | None = None,
) -> Service[EmailSettings, Container]:
    """The email service: consumes ``settings.stream`` with :class:`Delivery`.

    ``RIVERBED_CONSUMER_*`` (or ``consumer_settings``) apply except the number of
    deliveries: ``EMAIL_MAX_ATTEMPTS`` (SMTP retries for days, not 5 times), counted by the
    service, plus the grace deliveries in which it can still publish a cut-off outcome.
    """
    consumer_settings = (consumer_settings or ConsumerSettings()).model_copy(
        update={"max_deliveries": settings.max_attempts + GRACE_DELIVERIES}
    )
    service: Service[EmailSettings, Container] = Service(
        settings,
        functools.partial(lifespan, sender=sender),
        redis_settings=redis_settings,
        consumer_settings=consumer_settings,
    )
    service.subscribe(
        settings.stream,
        handler_of=lambda container: container.handler,
        backoff=Backoff(schedule=tuple(settings.retry_schedule_ms), jitter=RETRY_JITTER),
    )
    return service
