"""Container health check of a Riverbed service; standard library only (no curl in the image).

    python /app/healthcheck.py PORT_VARIABLE [PATH]

Asks ``http://127.0.0.1:$PORT_VARIABLE/PATH`` (default ``/readyz``) and exits 0 on a 2xx
answer within 3 s, else 1 with one line saying why. The port is read from the service's
own variable (``GATEWAY_PORT``…), so that overriding it does not break the check.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def check(port_variable: str, path: str = "/readyz") -> tuple[bool, str]:
    port = os.environ.get(port_variable, "")
    if not port.isdigit():
        return False, f"{port_variable}={port!r} is not a port number"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return False, f"{url} answered {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"{url} unreachable: {error}"
    return 200 <= status < 300, f"{url} answered {status}"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(f"usage: {argv[0]} PORT_VARIABLE [PATH]", file=sys.stderr)
        return 2
    healthy, detail = check(*argv[1:])
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
