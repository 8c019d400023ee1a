"""Pure domain logic of the webhooks service: no I/O, no Redis, no database.

- :mod:`.model`     endpoints, deliveries and attempts as values
- :mod:`.signing`   Standard Webhooks secrets and signatures
- :mod:`.retry`     the retry schedule, ``Retry-After``, what an answer means
- :mod:`.addresses` the SSRF guard's address classification and allow-list
- :mod:`.matching`  event-type filters and fan-out (which endpoint gets which event)
- :mod:`.health`    when a failing endpoint is disabled
"""
