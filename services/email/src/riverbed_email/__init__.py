"""Riverbed email service: ``email.requested.v1`` in, mail over SMTP, outcome events out.

The packages, by what they own (imports go downwards only):

- ``domain``         addresses, content, the MIME message (``compose``), what an SMTP
                     answer means (``smtp_replies``), records and outcome events; no I/O
- ``service_layer``  the use case (``delivery``: the steps of one request; ``reporting``:
                     record, then publish) and the ``ports`` it needs
- ``adapters``       SMTP (``smtp``), Redis (``redis_stores``, ``lua/``), the outcome
                     records' writer (``records``), Jinja templates (``templates``)
- ``entrypoints``    the ``email.requested`` handler
- ``bootstrap``      the composition root: ``lifespan``, ``create_service(settings)``
- ``cli``            ``riverbed-email`` (serve; ``suppressions list|add|remove``)

Outside the layers: ``sink``, the local SMTP sink of ``make run``, and ``testing``, a
scripted SMTP server for tests.
"""
