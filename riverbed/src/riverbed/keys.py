"""Every Redis key Riverbed uses, built in this one module.

All keys of one logical stream share the hash tag ``{<stream>}`` so that the
stream, its dead-letter stream, its retry schedule and its idempotency keys
live in one Redis Cluster slot and can be used together in one Lua script or
MULTI. Cache keys carry their namespace as their hash tag instead.

Layout (``<s>`` is a logical stream name such as ``email.requested``):

- ``rb:{<s>}:stream``                 the stream itself (no TTL, ever)
- ``rb:{<s>}:dlq``                    its dead-letter stream (no TTL)
- ``rb:{<s>}:delay``                  sorted set: delay-store member -> due time (ms since epoch)
- ``rb:{<s>}:delay:items``            hash: delay-store member -> the event's JSON, as appended
- ``rb:{<s>}:delay:meta``             hash: delay-store member -> routing header and details
- ``rb:{<s>}:delay:promoted``         sorted set: delayed-event member -> when promoted (ms);
                                       trimmed to a window, so a late cancel can answer "too late"
- ``rb:{<s>}:retry:<group>``          legacy (before the delay store): entry id -> due time (ms);
                                       read only to carry its entries over
- ``rb:{<s>}:consumers:<group>``     hash: consumer name -> last heartbeat (ms since epoch)
- ``rb:{<s>}:done:<group>``           sorted set: handled event id -> when (ms); trimmed to a window
- ``rb:{<s>}:schedule:<name>``        hash: a recurring schedule publishing onto ``<s>`` (no TTL)
- ``rb:schedules``                    hash: schedule name -> logical stream (the index; no TTL)
- ``rb:cache:{<ns>}:v``               namespace version counter (no TTL; one per namespace)
- ``rb:cache:{<ns>}:<version>:<key>`` cache entry (always a TTL)
"""

from __future__ import annotations

PREFIX = "rb"


def _tag(stream: str) -> str:
    if not stream or any(c in stream for c in "{}: \t\n"):
        raise ValueError(
            f"invalid logical stream name {stream!r}: use dotted lowercase names "
            "such as 'email.requested' (no braces, colons or whitespace)"
        )
    return f"{PREFIX}:{{{stream}}}"


def stream_key(stream: str) -> str:
    return f"{_tag(stream)}:stream"


def dead_letter_key(stream: str) -> str:
    return f"{_tag(stream)}:dlq"


def legacy_retry_schedule_key(stream: str, group: str) -> str:
    """Where retries waited before the delay store: pending entry ids scored by due time (ms).

    Consumers of this version carry its members over into the delay store and never add any.
    """
    return f"{_tag(stream)}:retry:{group}"


def delay_key(stream: str) -> str:
    """Sorted set of what waits to be appended to ``stream``: member -> due time (ms since epoch).

    Members are ``event:<event id>`` for an event published for later (every group gets it)
    and ``retry:<group>:<entry id>`` for a retry or deferral of one group's delivery.
    """
    return f"{_tag(stream)}:delay"


def delay_items_key(stream: str) -> str:
    """Hash: delay-store member -> the event's CloudEvents JSON, as it will be appended."""
    return f"{_tag(stream)}:delay:items"


def delay_meta_key(stream: str) -> str:
    """Hash: delay-store member -> ``<group>\\t<attempt>\\t<first_seen>\\t<owner>\\t<JSON>``:
    what a promoted retry carries (empty for an event published for later), the owner of a
    delayed event, then its due time, or a retry's reason and last error."""
    return f"{_tag(stream)}:delay:meta"


def delay_promoted_key(stream: str) -> str:
    """Sorted set: delayed-event member -> when it was promoted (ms); trimmed to a window."""
    return f"{_tag(stream)}:delay:promoted"


def heartbeats_key(stream: str, group: str) -> str:
    """Hash: consumer name -> its last heartbeat (ms since epoch, Redis time).

    A consumer beats every second while it runs and removes its field when it stops; a
    sibling takes over the pending entries of a consumer whose beat is older than the
    heartbeat timeout. A consumer that never beat here (a version before heartbeats) is
    left to the visibility timeout.
    """
    return f"{_tag(stream)}:consumers:{group}"


def idempotency_key(stream: str, group: str) -> str:
    """Sorted set of the event ids ``group`` handled, scored by when (ms since epoch)."""
    return f"{_tag(stream)}:done:{group}"


def logical_stream_of(key: str) -> str:
    """The logical stream name inside a stream-family key (``rb:{x}:stream`` -> ``x``)."""
    start, end = key.find("{"), key.find("}")
    if not key.startswith(f"{PREFIX}:{{") or end < start:
        raise ValueError(f"{key!r} is not a Riverbed stream key")
    return key[start + 1 : end]


def cache_version_key(namespace: str) -> str:
    return f"{PREFIX}:cache:{{{namespace}}}:v"


def cache_entry_key(namespace: str, version: int, key: str) -> str:
    return f"{PREFIX}:cache:{{{namespace}}}:{version}:{key}"


def stream_key_pattern() -> str:
    """SCAN pattern matching every Riverbed stream (not dead-letter) key."""
    return f"{PREFIX}:{{*}}:stream"


def cache_lease_key(namespace: str, version: int, key: str) -> str:
    """Fill lease of a cache entry: ``rb:cache:{<ns>}:lease:<version>:<key>`` (always a TTL).

    Set by a lookup that missed, checked and removed when the loaded value is
    written; a delete or set in between removes it, so a load that raced a
    change never writes its stale value. ``lease`` cannot be a version (those
    are integers), so it never collides with an entry key.
    """
    return f"{PREFIX}:cache:{{{namespace}}}:lease:{version}:{key}"


# -- gateway ----------------------------------------------------------------------
# The gateway's keys are per API key or per request, not per stream: they get their
# own hash tags, and are never used in one script with a stream.


def api_keys_key() -> str:
    """Hash: sha256 of an API key (hex) -> JSON {name, scopes, created_at}. No TTL."""
    return f"{PREFIX}:gateway:api-keys"


def request_idempotency_key(api_key_name: str, idempotency_key: str) -> str:
    """JSON record of one idempotent request (TTL: the idempotency window, 24 h default)."""
    return f"{PREFIX}:gateway:idem:{{{api_key_name}}}:{idempotency_key}"


def rate_limit_key(api_key_name: str) -> str:
    """GCRA state of one API key: its theoretical arrival time (TTL: one burst period)."""
    return f"{PREFIX}:gateway:rate:{{{api_key_name}}}"


def inbound_event_key(provider: str, provider_event_id: str) -> str:
    """Marker of a provider webhook event already published (TTL: the dedup window)."""
    return f"{PREFIX}:gateway:inbound:{{{provider}}}:{provider_event_id}"


# -- email ------------------------------------------------------------------------
# The email service's keys are per address, per event or per recipient domain. A domain's
# rate and slow-down keys share the domain as hash tag, so one script may use both.


def email_suppression_key() -> str:
    """Hash: lowercased address -> JSON {reason, smtp_code, event_id, at_ms}. No TTL.

    Shared by every email replica; checked before each send, listed and edited by
    ``riverbed-email suppressions``. Entries stay until an operator removes them.
    """
    return f"{PREFIX}:email:suppressed"


def email_sent_key(event_id: str) -> str:
    """Marker of an email the SMTP server accepted, by request event id (TTL: 7 d default).

    JSON {message_id, attempts, at_ms}, written with SET NX as the send completes, so
    that a redelivered request is not sent twice.
    """
    return f"{PREFIX}:email:sent:{event_id}"


def email_failed_key(event_id: str) -> str:
    """Record of a request the email service gave up, by request event id (TTL: as the sent
    marker's). JSON {kind, reason, permanent, smtp_code, attempts, at_ms}, written with SET NX
    before ``email.failed`` is published, so a redelivery publishes that same event again
    instead of trying the relay again."""
    return f"{PREFIX}:email:failed:{event_id}"


def email_sending_key(event_id: str) -> str:
    """Lease of the email replica sending a request, by request event id (PX: the lease,
    ``EMAIL_SEND_LEASE_S``). Its holder's token, taken before the relay is contacted and
    released once the outcome is recorded, so another replica handed the same request
    meanwhile waits instead of sending it too."""
    return f"{PREFIX}:email:sending:{event_id}"


def email_domain_rate_key(domain: str) -> str:
    """GCRA state of one recipient domain: its theoretical arrival time, µs (TTL: one burst)."""
    return f"{PREFIX}:email:rate:{{{domain}}}"


def email_domain_slowdown_key(domain: str) -> str:
    """Slow-down level of a domain that answered 421/450/451/452 (integer; TTL: the window)."""
    return f"{PREFIX}:email:slow:{{{domain}}}"


# -- payments ---------------------------------------------------------------------


def reconciliation_lease_key(report_id: str) -> str:
    """Lease of the replica matching a settlement report (token; TTL: the lease, renewed)."""
    return f"{PREFIX}:payments:reconciliation:{report_id}:lease"


# -- webhooks ---------------------------------------------------------------------
# Per subscriber endpoint, not per stream: each endpoint is its own hash tag.


def webhook_rate_limit_key(endpoint_id: str) -> str:
    """GCRA state of one webhook endpoint's rate limit: its theoretical arrival time (ms since
    the epoch, Redis clock). TTL: until the state no longer limits anything (at most ~1 s)."""
    return f"{PREFIX}:webhooks:rate:{{{endpoint_id}}}"


# -- schedules --------------------------------------------------------------------
# A schedule's state lives under the hash tag of the stream its events go to, so one
# script can check it, append the occurrence's event and advance it (riverbed.schedules).
# The index spans every stream: it has no tag of a stream and is never in one script
# with a state.


def schedule_key(stream: str, name: str) -> str:
    """Hash: definition, next and last occurrence (ms since the epoch), counts, flags."""
    return f"{_tag(stream)}:schedule:{name}"


def schedule_index_key(scope: str | None = None) -> str:
    """Hash: schedule name -> logical stream of its state. ``scope`` keeps a separate set
    of schedules (tests); the services use the default."""
    return f"{PREFIX}:schedules" if scope is None else f"{PREFIX}:schedules:{scope}"
