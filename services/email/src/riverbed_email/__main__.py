"""Entry point: ``riverbed-email`` (or ``python -m riverbed_email``); see ``cli``."""

from __future__ import annotations

import sys

from riverbed_email.cli import main

if __name__ == "__main__":
    sys.exit(main())
