"""Riverbed email service: ``email.requested.v1`` in, mail over SMTP, outcome events out.

The modules, by what they own:

- ``delivery``   the handler: the steps of one request and what each outcome publishes
- ``templates``  rendering (Jinja, sandboxed, autoescaped HTML, strict variables)
- ``compose``    the MIME message (Message-ID from the event id, List-Unsubscribe)
- ``outcomes``   SMTP answers -> sent / retry / reject (no I/O)
- ``ports``      the interfaces delivery needs; ``smtp`` and ``store`` implement them
- ``bootstrap``  the composition root, ``create_service(settings)``
- ``cli``        ``riverbed-email`` (serve; ``suppressions list|add|remove``)
- ``sink``       the local SMTP sink of ``make run``; ``testing``: a scripted SMTP server
"""
