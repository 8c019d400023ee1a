"""Run a command against a throwaway local Redis Cluster: ``make test-cluster`` uses it.

Starts three redis-server masters on free loopback ports (``riverbed.testing``'s
``LocalRedisCluster``, in a temporary directory), runs the command with ``REDIS_URL``
naming one node and ``REDIS_CLUSTER=true``, then stops the nodes and removes the
directory. Exits with the command's exit code.

Usage: ``uv run python deploy/local/with_redis_cluster.py -- pytest -q riverbed/tests``
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from riverbed.testing import LocalRedisCluster


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rb-cluster-") as directory:
        cluster = LocalRedisCluster(Path(directory))
        try:
            cluster.start()
            ports = ", ".join(str(node.port) for node in cluster.nodes)
            print(f"[cluster] Redis Cluster of {cluster.masters} masters on 127.0.0.1: {ports}")
            env = {**os.environ, "REDIS_URL": cluster.url, "REDIS_CLUSTER": "true"}
            return subprocess.call(command, env=env)  # noqa: S603 - the caller's own command
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
