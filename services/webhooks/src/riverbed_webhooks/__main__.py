"""Entry point: `riverbed-webhooks` (or `python -m riverbed_webhooks`).

A skeleton until the webhooks issue lands: it serves /healthz, /readyz and /metrics
on its port and consumes nothing yet.
"""

from __future__ import annotations

from riverbed.service import Service
from riverbed_webhooks.settings import WebhooksSettings


def create_service(settings: WebhooksSettings) -> Service:
    return Service(settings)


def main() -> None:
    create_service(WebhooksSettings()).run()


if __name__ == "__main__":
    main()
