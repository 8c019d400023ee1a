"""Entry point: `riverbed-email` (or `python -m riverbed_email`).

A skeleton until the email issue lands: it serves /healthz, /readyz and /metrics
on its port and consumes nothing yet.
"""

from __future__ import annotations

from riverbed.service import Service
from riverbed_email.settings import EmailSettings


def create_service(settings: EmailSettings) -> Service:
    return Service(settings)


def main() -> None:
    create_service(EmailSettings()).run()


if __name__ == "__main__":
    main()
