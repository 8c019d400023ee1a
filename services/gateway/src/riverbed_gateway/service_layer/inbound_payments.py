"""Inbound payments: a provider's signed webhook delivery, once its body is read as JSON,
verified (:mod:`..domain.signatures`), normalised (:mod:`..domain.providers`), deduplicated
and published.

Order of checks after the body: signature (400), timestamp (400 ``signature-stale``),
payload (422 with field errors; 400 ``provider-time-out-of-range`` for a ``created`` past
9999-12-31T23:59:59Z, which no RFC 3339 time can carry), backpressure (503), dedup, publish,
202. A delivery of a published event is answered ``200 {"status": "duplicate"}`` and
publishes nothing; one that arrives while its twin is still in flight gets 409 (the
provider retries). The CloudEvent id is a UUID5 of provider and provider event id, so
whatever gets published twice (a crash between XADD and marking, or a retry after the
window) carries the same id and consumers' idempotency absorbs it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from riverbed.problems import Problem
from riverbed_contracts import CloudEvent
from riverbed_contracts.payments import ProviderPayment
from riverbed_contracts.registry import new_event, spec_for
from riverbed_gateway import metrics
from riverbed_gateway.domain.delivery import rfc3339
from riverbed_gateway.domain.providers import (
    NotNormalizable,
    ProviderEvent,
    TimeOutOfRange,
    event_id,
    normalize,
)
from riverbed_gateway.domain.signatures import verify_signature
from riverbed_gateway.service_layer.ports import (
    Backpressure,
    DedupClaim,
    EventStreams,
    InboundDedup,
)
from riverbed_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class InboundAnswer:
    """``outcome`` (accepted, duplicate, ignored: the metric's label) and what to answer."""

    outcome: str
    status: int
    body: dict[str, Any]


class InboundPayments:
    """Verify, dedup, normalize and publish providers' payment webhooks."""

    def __init__(
        self,
        secrets: Mapping[str, tuple[bytes, ...]],
        settings: GatewaySettings,
        dedup: InboundDedup,
        streams: EventStreams,
        backpressure: Backpressure,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``secrets``: provider -> its signing secrets (checked: ``provider_secrets``)."""
        self._secrets = secrets
        self._dedup = dedup
        self._streams = streams
        self._backpressure = backpressure
        self._clock = clock
        self.tolerance_s = settings.inbound_tolerance_s
        self.max_body_bytes = settings.max_body_bytes
        for provider in secrets:
            for outcome in ("accepted", "duplicate", "ignored"):
                metrics.INBOUND.labels(provider, outcome)  # exported as 0 from the start

    def serves(self, provider: str) -> bool:
        return provider in self._secrets

    async def receive(
        self,
        provider: str,
        raw: bytes,
        document: Any,
        *,
        signature: str | None,
        correlation_id: str | None,
    ) -> InboundAnswer:
        """Publish the payment ``provider``'s delivery reports (a configured provider's)."""
        verify_signature(
            signature, raw, self._secrets[provider], now=self._clock(), tolerance_s=self.tolerance_s
        )
        normalized = _normalized(provider, document)
        if normalized is None:
            ignored_type = document["type"]
            log.info("inbound event ignored", provider=provider, provider_type=ignored_type)
            return InboundAnswer("ignored", 200, {"status": "ignored", "type": ignored_type})
        provider_event, payment = normalized
        event = _event(provider, provider_event, payment, correlation_id)
        stream = spec_for(type(payment)).stream
        self._backpressure.check({stream})
        claim = await self._dedup.claim(provider, provider_event.id)
        if claim.held_by == "in_flight":
            raise Problem(
                409,
                "inbound-event-in-flight",
                "Event in progress",
                f"provider event {provider_event.id!r} is being published by another "
                "delivery; retry later",
                headers={"Retry-After": "1"},
            )
        if claim.held_by == "published":
            body = {"status": "duplicate", "id": event.id, "provider_event_id": provider_event.id}
            return InboundAnswer("duplicate", 200, body)
        entry_id = await self._publish(claim, event, stream, provider, provider_event.id)
        accepted = {
            "id": event.id,
            "event_id": event.id,
            "type": event.type,
            "stream": stream,
            "entry_id": entry_id,
            "deliver_at": rfc3339(int(self._clock() * 1000)),  # delivered now
        }  # the shape of Accepted
        return InboundAnswer("accepted", 202, accepted)

    async def _publish(
        self,
        claim: DedupClaim,
        event: CloudEvent,
        stream: str,
        provider: str,
        provider_event_id: str,
    ) -> str:
        """Append ``event`` under the dedup ``claim`` this delivery holds; its entry id."""
        try:
            entry_id = await self._streams.append(event, validated=False)
        except BaseException:
            await self._dedup.release(claim)
            raise
        await self._dedup.published(claim, event.id, entry_id)
        metrics.ACCEPTED_EVENTS.labels(event.type).inc()
        log.info(
            "inbound event published",
            provider=provider,
            provider_event_id=provider_event_id,
            event_id=event.id,
            type=event.type,
            stream=stream,
            entry_id=entry_id,
            correlation_id=event.correlationid,
        )
        return entry_id


def _normalized(provider: str, document: Any) -> tuple[ProviderEvent, ProviderPayment] | None:
    """:func:`normalize`, its refusals as problems."""
    try:
        return normalize(provider, document)
    except NotNormalizable as error:
        raise Problem(
            422,
            "invalid-provider-event",
            "Invalid provider event",
            "the provider's event lacks what its payment event needs",
            errors=error.errors,
        ) from None
    except TimeOutOfRange as error:
        raise Problem(
            400,
            "provider-time-out-of-range",
            "Time out of range",
            f"{error}: the last time an event can carry (RFC 3339 years have four digits)",
            errors=[{"loc": ["created"], "msg": "past 9999", "type": "out_of_range"}],
        ) from None


def _event(
    provider: str,
    provider_event: ProviderEvent,
    payment: ProviderPayment,
    correlation_id: str | None,
) -> CloudEvent:
    return new_event(
        payment,
        id=event_id(provider, provider_event.id),
        source=f"urn:riverbed:inbound:{provider}",
        subject=payment.provider_payment_id,
        time=provider_event.occurred_at,
        correlationid=correlation_id or uuid.uuid4().hex,
    )
