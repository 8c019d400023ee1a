"""Endpoint management: create, update, disable/enable, delete, rotate the secret.

Every change invalidates the endpoint's cache entries; every disabling (by an
operator, a 410 or the health rule) goes through :func:`disable_endpoint`, which
reports it once with ``webhook.endpoint.disabled.v1``, queued in the outbox in the
disabling's own transaction (so an API call answers without Redis, and a crash
after the commit loses no report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from redis.exceptions import RedisError

from riverbed_contracts import CloudEvent
from riverbed_webhooks import metrics
from riverbed_webhooks.domain.addresses import AddressPolicy
from riverbed_webhooks.domain.matching import InvalidFilter, validate_filter
from riverbed_webhooks.domain.model import DisabledReason, Endpoint, new_id
from riverbed_webhooks.domain.outcomes import endpoint_disabled
from riverbed_webhooks.domain.signing import generate_secret
from riverbed_webhooks.domain.urls import InvalidUrl, validate_url
from riverbed_webhooks.service_layer.errors import Conflict, Invalid, NotFound
from riverbed_webhooks.service_layer.ports import Clock, EndpointCache, EndpointRepository

log = structlog.get_logger(__name__)

#: bounds of what an endpoint may ask for
MAX_FILTERS = 100
MAX_RATE_PER_S = 10_000
MAX_CONCURRENCY = 1_000


@dataclass(frozen=True)
class EndpointSpec:
    """What a caller may set on an endpoint; None in an update means "unchanged"."""

    url: str | None = None
    description: str | None = None
    event_types: Sequence[str] | None = None
    rate_limit_per_s: int | None = None
    max_concurrency: int | None = None
    clear_rate_limit: bool = False
    clear_max_concurrency: bool = False


async def invalidate(cache: EndpointCache, endpoint_id: str) -> None:
    """Drop the endpoint's cache entries; a Redis failure costs staleness up to the TTL only."""
    try:
        await cache.invalidate(endpoint_id)
    except RedisError as error:
        log.warning(
            "endpoint cache not invalidated; entries expire by their TTL",
            endpoint_id=endpoint_id,
            error=f"{type(error).__name__}: {error}",
        )


async def disable_endpoint(
    repository: EndpointRepository,
    cache: EndpointCache,
    endpoint_id: str,
    reason: DisabledReason,
    now: datetime,
    *,
    cause: CloudEvent | None = None,
    failing_since: datetime | None = None,
    last_status_code: int | None = None,
    detail: str | None = None,
) -> bool:
    """Disable the endpoint if it is enabled, reporting it (``webhook.endpoint.disabled.v1``,
    through the outbox, in the same transaction); whether this call disabled it."""
    report = endpoint_disabled(
        endpoint_id,
        reason,
        now,
        cause=cause,
        failing_since=failing_since,
        last_status_code=last_status_code,
        detail=detail,
    )
    if await repository.disable(endpoint_id, reason, now, report=report) is None:
        return False  # already disabled: whoever disabled it reported it
    await invalidate(cache, endpoint_id)
    metrics.ENDPOINTS_DISABLED.labels(reason.value).inc()
    log.warning("endpoint disabled", endpoint_id=endpoint_id, reason=reason.value, detail=detail)
    return True


def _checked(spec: EndpointSpec, policy: AddressPolicy) -> EndpointSpec:
    try:
        if spec.url is not None:
            validate_url(spec.url, policy)
    except InvalidUrl as error:
        raise Invalid("url", str(error)) from None
    if spec.event_types is not None:
        if len(spec.event_types) > MAX_FILTERS:
            raise Invalid("event_types", f"at most {MAX_FILTERS} filters")
        try:
            for pattern in spec.event_types:
                validate_filter(pattern)
        except InvalidFilter as error:
            raise Invalid("event_types", str(error)) from None
    if spec.rate_limit_per_s is not None and not 1 <= spec.rate_limit_per_s <= MAX_RATE_PER_S:
        raise Invalid("rate_limit_per_s", f"a rate limit is 1-{MAX_RATE_PER_S} requests a second")
    if spec.max_concurrency is not None and not 1 <= spec.max_concurrency <= MAX_CONCURRENCY:
        raise Invalid("max_concurrency", f"a concurrency cap is 1-{MAX_CONCURRENCY}")
    return spec


@dataclass
class EndpointManager:
    repository: EndpointRepository
    cache: EndpointCache
    policy: AddressPolicy
    clock: Clock
    rotation_grace: timedelta

    async def get(self, endpoint_id: str) -> Endpoint:
        found = await self.repository.get(endpoint_id)
        if found is None:
            raise NotFound("endpoint", endpoint_id)
        return found

    async def create(self, spec: EndpointSpec) -> Endpoint:
        """The new endpoint, enabled, with a fresh secret (the only time it is shown)."""
        if spec.url is None:
            raise Invalid("url", "an endpoint needs a url")
        _checked(spec, self.policy)
        now = self.clock()
        endpoint = Endpoint(
            id=new_id("ep"),
            url=spec.url,
            description=spec.description or "",
            event_types=tuple(dict.fromkeys(spec.event_types or ())),
            rate_limit_per_s=spec.rate_limit_per_s,
            max_concurrency=spec.max_concurrency,
            secret=generate_secret(),
            created_at=now,
            updated_at=now,
        )
        await self.repository.add(endpoint)
        await invalidate(self.cache, endpoint.id)
        log.info("endpoint created", endpoint_id=endpoint.id)
        return endpoint

    async def update(self, endpoint_id: str, spec: EndpointSpec) -> Endpoint:
        _checked(spec, self.policy)
        current = await self.get(endpoint_id)
        changes: dict[str, object] = {"updated_at": self.clock()}
        if spec.url is not None:
            changes["url"] = spec.url
        if spec.description is not None:
            changes["description"] = spec.description
        if spec.event_types is not None:
            changes["event_types"] = tuple(dict.fromkeys(spec.event_types))
        if spec.rate_limit_per_s is not None or spec.clear_rate_limit:
            changes["rate_limit_per_s"] = spec.rate_limit_per_s
        if spec.max_concurrency is not None or spec.clear_max_concurrency:
            changes["max_concurrency"] = spec.max_concurrency
        updated = current.model_copy(update=changes)
        await self.repository.save(updated)
        await invalidate(self.cache, endpoint_id)
        return updated

    async def disable(self, endpoint_id: str) -> Endpoint:
        await self.get(endpoint_id)
        await disable_endpoint(
            self.repository,
            self.cache,
            endpoint_id,
            DisabledReason.MANUAL,
            self.clock(),
            detail="disabled through the API",
        )
        return await self.get(endpoint_id)

    async def enable(self, endpoint_id: str) -> Endpoint:
        current = await self.get(endpoint_id)
        if current.enabled:
            return current
        updated = current.model_copy(
            update={
                "enabled": True,
                "disabled_reason": None,
                "disabled_at": None,
                "updated_at": self.clock(),
            }
        )
        await self.repository.save(updated, reset_health=True)  # the clock starts afresh
        await invalidate(self.cache, endpoint_id)
        log.info("endpoint enabled", endpoint_id=endpoint_id)
        return updated

    async def delete(self, endpoint_id: str) -> None:
        if not await self.repository.delete(endpoint_id):
            raise NotFound("endpoint", endpoint_id)
        await invalidate(self.cache, endpoint_id)
        log.info("endpoint deleted", endpoint_id=endpoint_id)

    async def rotate_secret(self, endpoint_id: str, grace: timedelta | None = None) -> Endpoint:
        """A new secret signs from now on; the old one too, for ``grace`` (default: settings)."""
        current = await self.get(endpoint_id)
        grace = self.rotation_grace if grace is None else grace
        if grace < timedelta(0):
            raise Invalid("grace_period_s", "a grace period is >= 0 s")
        now = self.clock()
        updated = current.model_copy(
            update={
                "secret": generate_secret(),
                "previous_secret": current.secret if grace > timedelta(0) else None,
                "previous_secret_expires_at": now + grace if grace > timedelta(0) else None,
                "updated_at": now,
            }
        )
        await self.repository.save(updated)
        await invalidate(self.cache, endpoint_id)
        log.info("endpoint secret rotated", endpoint_id=endpoint_id, grace_s=grace.total_seconds())
        return updated


__all__ = ["Conflict", "EndpointManager", "EndpointSpec", "disable_endpoint", "invalidate"]
