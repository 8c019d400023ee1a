"""The gateway's use cases (ingestion, inbound payments, delayed events, schedules admin)
and, in ``ports``, what they need from the outside world."""
