"""``python -m riverbed.cli``: the ``riverbed`` console script without the script."""

import sys

from riverbed.cli.app import main

sys.exit(main())
