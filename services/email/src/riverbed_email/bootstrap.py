"""The composition root: settings in, a wired :class:`~riverbed.service.Service` out.

Nothing is opened here: the service opens Redis when it starts, and the adapters reach
it through ``lambda: service.redis``. Tests pass their own consumer settings and, for
unit-level wiring, their own sender.

The email service counts attempts itself (``EMAIL_MAX_ATTEMPTS``); the runtime's limit is
that plus :data:`~riverbed_email.delivery.GRACE_DELIVERIES`, so a last attempt cut off
before its outcome was out is delivered once more and gives up with ``email.failed``.
"""

from __future__ import annotations

from collections.abc import Sequence

from riverbed.backoff import Backoff
from riverbed.connection import Redis, connect
from riverbed.publisher import Publisher
from riverbed.service import Service
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_contracts import CloudEvent
from riverbed_email.addresses import DomainLabels
from riverbed_email.compose import Unsubscribe
from riverbed_email.delivery import GRACE_DELIVERIES, Delivery, DeliveryPolicy
from riverbed_email.ports import EmailSender
from riverbed_email.settings import EmailSettings
from riverbed_email.smtp import SmtpSender
from riverbed_email.store import RedisDomainThrottle, RedisSendLedger, RedisSuppressionList
from riverbed_email.templates import TemplateRenderer

#: ± fraction of each SMTP retry delay, so a burst of deferrals does not retry in lockstep
RETRY_JITTER = 0.1

#: connections of the outcome records' own pool: their one writer (riverbed_email.records)
#: never waits for a connection of the shared pool, which hundreds of handlers' other
#: commands and the blocking reads hold; under a burst that wait was most of the window in
#: which a kill -9 sends twice (see the README). 2: one in use, one spare after a drop
RECORD_CONNECTIONS = 2


class EmailService(Service):
    """The runtime's service, plus: outcome records are written over a connection pool of
    their own, and those still waiting for Redis when it stops are logged (each is a
    request that will be acted on again)."""

    delivery: Delivery
    _records_redis: Redis | None = None

    @property
    def records_redis(self) -> Redis:
        if self._records_redis is None:
            raise RuntimeError("the service has not started: Redis is opened by start()")
        return self._records_redis

    async def start(self) -> None:
        settings = self.redis_settings.model_copy(update={"max_connections": RECORD_CONNECTIONS})
        self._records_redis = connect(settings)
        await super().start()

    async def stop(self) -> None:
        # the drain (inside) lets handlers waiting for Redis finish within the shutdown
        # timeout; what is still unrecorded after it can only be logged
        await super().stop()
        await self.delivery.close()
        if self._records_redis is not None:
            await self._records_redis.aclose()
            self._records_redis = None


def create_service(
    settings: EmailSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    sender: EmailSender | None = None,
) -> EmailService:
    """The email service: consumes ``settings.stream`` with :class:`Delivery`.

    ``RIVERBED_CONSUMER_*`` (or ``consumer_settings``) apply except the number of
    deliveries: ``EMAIL_MAX_ATTEMPTS`` (SMTP retries for days, not 5 times), counted by the
    service, plus the grace deliveries in which it can still publish a cut-off outcome.
    """
    consumer_settings = (consumer_settings or ConsumerSettings()).model_copy(
        update={"max_deliveries": settings.max_attempts + GRACE_DELIVERIES}
    )
    service = EmailService(
        settings, redis_settings=redis_settings, consumer_settings=consumer_settings
    )

    async def publish(events: Sequence[CloudEvent]) -> None:
        await Publisher(service.redis).publish_many(events)

    unsubscribe = None
    if settings.unsubscribe_url is not None:
        secret = settings.unsubscribe_secret
        unsubscribe = Unsubscribe(
            settings.unsubscribe_url, secret.get_secret_value().encode() if secret else None
        )
    delivery = Delivery(
        DeliveryPolicy(
            from_address=settings.from_address,
            envelope_sender=settings.envelope_sender,
            message_id_domain=settings.effective_message_id_domain,
            max_attempts=settings.max_attempts,
            rate_limit_max_wait_ms=settings.rate_limit_max_wait_ms,
            unsubscribe=unsubscribe,
            send_lease_ms=settings.send_lease_s * 1000,
        ),
        renderer=TemplateRenderer(settings.templates_dir),
        sender=sender or SmtpSender(settings),
        suppressions=RedisSuppressionList(lambda: service.redis),
        ledger=RedisSendLedger(lambda: service.redis, ttl_s=settings.sent_marker_ttl_s),
        record_ledger=RedisSendLedger(
            lambda: service.records_redis, ttl_s=settings.sent_marker_ttl_s
        ),
        throttle=RedisDomainThrottle(
            lambda: service.redis,
            per_second=settings.domain_rate_per_s,
            burst=settings.domain_burst,
            slowdown_window_s=settings.slowdown_window_s,
            max_level=settings.slowdown_max_level,
        ),
        publish=publish,
        domain_labels=DomainLabels(settings.metrics_domains),
    )
    service.delivery = delivery
    service.subscribe(
        settings.stream,
        delivery,
        backoff=Backoff(schedule=tuple(settings.retry_schedule_ms), jitter=RETRY_JITTER),
    )
    return service
