"""The Redis exporter beside the launcher's Redis, when its binary is on PATH.

The field's exporter (Debian's ``prometheus-redis-exporter``, upstream's ``redis_exporter``)
turns Redis INFO into ``redis_*`` series on ``/metrics``. It only reads (INFO, CONFIG GET,
SLOWLOG LEN …), so it also watches a Redis named by ``REDIS_URL``.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request

from .processes import Child, Stop, free_port, http_status, port_is_free, say, spawn, stop
from .spec import HOST, VAR

#: the binary's names: Debian's package, then upstream's release
BINARIES = ("prometheus-redis-exporter", "redis_exporter")
DEFAULT_PORT = 9121  # the exporter's own default; a free one when it is taken
PORT_VARIABLE = "REDIS_EXPORTER_PORT"  # a fixed port instead
HOW_TO_GET = (
    "Redis exporter not started: neither prometheus-redis-exporter nor redis_exporter is on "
    "PATH (Debian/Ubuntu: 'sudo apt-get install prometheus-redis-exporter'; elsewhere: a "
    "release from https://github.com/oliver006/redis_exporter/releases)"
)


def find_binary() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def choose_port() -> int | None:
    """``REDIS_EXPORTER_PORT`` when set (None, said why, when it cannot be used), else 9121
    when free, else a free port."""
    raw = os.environ.get(PORT_VARIABLE, "")
    if not raw:
        return DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        say(f"Redis exporter not started: {PORT_VARIABLE}={raw!r} is not a port (1-65535)")
        return None
    if not port_is_free(int(raw)):
        say(f"Redis exporter not started: port {raw} ({PORT_VARIABLE}) is in use")
        return None
    return int(raw)


def start_exporter(redis_url: str, stop_flag: Stop) -> tuple[Child, str] | None:
    """The exporter watching ``redis_url``, once it answers; and its metrics URL. None (said
    why) when its binary is missing, its port cannot be used, or it does not come up."""
    binary = find_binary()
    if binary is None:
        say(HOW_TO_GET)
        return None
    port = choose_port()
    if port is None:
        return None
    log_dir = VAR / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "redis-exporter.log"
    log_path.unlink(missing_ok=True)  # the tail shown on failure is this run's
    # The address in the environment, not the arguments: a URL's password stays out of ps.
    env = {**os.environ, "REDIS_ADDR": redis_url}
    args = [binary, f"-web.listen-address={HOST}:{port}"]
    child = spawn("redis-exporter", args, env, log_path)
    deadline = time.monotonic() + 10.0  # s; it starts in well under one
    while http_status(f"http://{HOST}:{port}/health") != 200:
        if child.process.poll() is not None:
            say(f"Redis exporter {child.describe_exit()}; not watching Redis\n{child.log_tail()}")
            return None
        if time.monotonic() >= deadline or stop_flag.requested.is_set():
            stop([child], 5.0, stop_flag)
            say(f"Redis exporter did not answer on port {port} in time; not watching Redis")
            return None
        time.sleep(0.05)
    return child, f"http://{HOST}:{port}/metrics"


def exporter_sees_redis(metrics_url: str) -> bool:
    """Whether the exporter reaches its Redis: ``redis_up 1`` on its metrics page."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5.0) as response:  # noqa: S310 - http://127.0.0.1 only
            page: bytes = response.read()
    except (urllib.error.URLError, OSError):
        return False
    return b"\nredis_up 1\n" in page
