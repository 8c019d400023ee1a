"""The composition root: settings in, a wired :class:`~riverbed.service.Service` out.

Nothing is opened here: the service opens Redis when it starts, and the adapters reach
it through ``lambda: service.redis``. Tests pass their own consumer settings and, for
unit-level wiring, their own sender.
"""

from __future__ import annotations

from collections.abc import Sequence

from riverbed.backoff import Backoff
from riverbed.publisher import Publisher
from riverbed.service import Service
from riverbed.settings import ConsumerSettings, RedisSettings
from riverbed_contracts import CloudEvent
from riverbed_email.addresses import DomainLabels
from riverbed_email.compose import Unsubscribe
from riverbed_email.delivery import Delivery, DeliveryPolicy
from riverbed_email.ports import EmailSender
from riverbed_email.settings import EmailSettings
from riverbed_email.smtp import SmtpSender
from riverbed_email.store import RedisDomainThrottle, RedisSendLedger, RedisSuppressionList
from riverbed_email.templates import TemplateRenderer

#: ± fraction of each SMTP retry delay, so a burst of deferrals does not retry in lockstep
RETRY_JITTER = 0.1


def create_service(
    settings: EmailSettings,
    *,
    redis_settings: RedisSettings | None = None,
    consumer_settings: ConsumerSettings | None = None,
    sender: EmailSender | None = None,
) -> Service:
    """The email service: consumes ``settings.stream`` with :class:`Delivery`.

    Without ``consumer_settings``, ``RIVERBED_CONSUMER_*`` apply except the number of
    deliveries, which is ``EMAIL_MAX_ATTEMPTS`` (SMTP retries for days, not 5 times).
    """
    if consumer_settings is None:
        consumer_settings = ConsumerSettings(max_deliveries=settings.max_attempts)
    service = Service(settings, redis_settings=redis_settings, consumer_settings=consumer_settings)

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
            max_attempts=consumer_settings.max_deliveries,
            rate_limit_max_wait_ms=settings.rate_limit_max_wait_ms,
            unsubscribe=unsubscribe,
        ),
        renderer=TemplateRenderer(settings.templates_dir),
        sender=sender or SmtpSender(settings),
        suppressions=RedisSuppressionList(lambda: service.redis),
        ledger=RedisSendLedger(lambda: service.redis, ttl_s=settings.sent_marker_ttl_s),
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
    service.subscribe(
        settings.stream,
        delivery,
        backoff=Backoff(schedule=tuple(settings.retry_schedule_ms), jitter=RETRY_JITTER),
    )
    return service
