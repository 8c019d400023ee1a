"""Entry point: `riverbed-gateway` (or `python -m riverbed_gateway`)."""

from __future__ import annotations

from riverbed_gateway.app import create_gateway
from riverbed_gateway.settings import GatewaySettings


def main() -> None:
    create_gateway(GatewaySettings()).run()


if __name__ == "__main__":
    main()
