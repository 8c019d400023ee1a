"""Entry point: `riverbed-payments` (or `python -m riverbed_payments`).

A skeleton until the payments issue lands: it serves /healthz, /readyz and /metrics
on its port and consumes nothing yet.
"""

from __future__ import annotations

from riverbed.service import Service
from riverbed_payments.settings import PaymentsSettings


def create_service(settings: PaymentsSettings) -> Service:
    return Service(settings)


def main() -> None:
    create_service(PaymentsSettings()).run()


if __name__ == "__main__":
    main()
