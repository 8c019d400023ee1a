"""riverbed.testing imports without pytest, so scripts and benchmarks can use its servers
with the runtime alone; only the plugin (its fixtures) needs pytest."""

from __future__ import annotations

import subprocess
import sys


def test_importing_riverbed_testing_does_not_import_pytest() -> None:
    check = (
        "import sys, riverbed.testing; "
        "assert not {'pytest', '_pytest'} & set(sys.modules), 'pytest was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
