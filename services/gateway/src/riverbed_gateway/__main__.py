"""Entry point: `riverbed-gateway` (or `python -m riverbed_gateway`).

A skeleton until the gateway issue lands: it serves /healthz, /readyz and /metrics
on its port and consumes nothing yet.
"""

from __future__ import annotations

from riverbed.service import Service
from riverbed_gateway.settings import GatewaySettings


def create_service(settings: GatewaySettings) -> Service:
    return Service(settings)


def main() -> None:
    create_service(GatewaySettings()).run()


if __name__ == "__main__":
    main()
