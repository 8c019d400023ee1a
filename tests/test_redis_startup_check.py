"""A service's command line refuses a Redis whose eviction policy could drop streams: exit
status 78 (EX_CONFIG), one clear line, no traceback. (The accepted policies, and the warning
on no maxmemory: riverbed/tests/test_redis_health.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from riverbed.testing import RedisServer, free_port

pytestmark = pytest.mark.integration


def run_gateway(redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "GATEWAY_PORT": str(free_port()),
        "RIVERBED_API_KEY": "startup-check-key-0123456789",
    }
    return subprocess.run(
        [sys.executable, "-m", "riverbed_gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_gateway_exits_78_on_allkeys_lru(own_redis: RedisServer) -> None:
    client = redis.Redis(port=own_redis.port)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()
    done = run_gateway(own_redis.url)
    output = done.stdout + done.stderr
    assert done.returncode == 78, output
    assert "refusing to start" in output
    assert "maxmemory-policy allkeys-lru" in output
    assert "Accepted: noeviction, or a volatile-* policy" in output
    assert "Traceback" not in output
