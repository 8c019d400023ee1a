"""``python -m riverbed_gateway``: the ``riverbed-gateway`` command (:mod:`.cli`)."""

from riverbed_gateway.cli import main

raise SystemExit(main())
