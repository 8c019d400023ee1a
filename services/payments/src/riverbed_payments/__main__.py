"""``python -m riverbed_payments``: the ``riverbed-payments`` command (see ``cli.py``)."""

from riverbed_payments.cli import main

raise SystemExit(main())
