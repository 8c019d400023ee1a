"""Entry point: `riverbed-gateway` (or `python -m riverbed_gateway`); see riverbed_gateway.cli."""

from __future__ import annotations

import sys

from riverbed_gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
