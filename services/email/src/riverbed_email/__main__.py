"""Entry point: ``python -m riverbed_email`` runs ``riverbed-email``; see ``cli``."""

from riverbed_email.cli import main

raise SystemExit(main())
