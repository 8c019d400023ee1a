"""``python -m riverbed_webhooks``: the same command line as ``riverbed-webhooks``."""

from riverbed_webhooks.cli import main

raise SystemExit(main())
