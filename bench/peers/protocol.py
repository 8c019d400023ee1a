"""The shared protocol: the same phases, on the same Redis, for every peer and Riverbed.

Each side is a script started as its own OS process (``worker`` or ``producer``) that
reports JSON lines on stdout (``tally.py``). For one peer and one kind of settings:

- enqueue: the producer alone enqueues every event into a fresh queue; its rate is the
  count over the time from its first enqueue to the acknowledgement of the last.
- drain: a worker started on that full queue; the count over the time from the moment it
  starts consuming (connected, not timed) to its last completion.
- end-to-end: a worker started on a fresh, empty queue handles a warm-up of its own, then
  sits idle; the producer enqueues every event; the count over the time from the
  producer's first enqueue to the worker's last completion (both wall clock, one machine).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis
from install import Peer

IDLE_BEFORE_E2E_S = 0.3  # the warm worker sits idle, blocked on its read, before the load


@dataclass(frozen=True)
class Figures:
    enqueue: float  # events/s
    drain: float
    end_to_end: float


class _Process:
    """A side's process; its stdout lines are read by a thread into a queue."""

    def __init__(self, peer: Peer, args: list[str], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(
            [*peer.command, *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, **peer.env},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.what = f"{peer.name} {args[0]} {args[3]}"

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def expect(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self.failure(f"no '{event}' within {self.timeout_s:.0f} s") from None
            try:
                report: dict[str, Any] = json.loads(line)
            except ValueError:
                continue  # a line of its own logging, not a report
            if report.get("event") == event:
                return report

    def failure(self, what: str) -> RuntimeError:
        self.popen.kill()
        self.popen.wait()
        self.log.seek(0)
        tail = "".join(self.log.readlines()[-15:])
        return RuntimeError(f"{self.what}: {what} (exit {self.popen.returncode}); stderr:\n{tail}")

    def close(self) -> None:
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.log.close()


class Protocol:
    def __init__(self, url: str, events_file: Path, events: int, warm: int) -> None:
        self.url = url
        self.redis = redis.Redis.from_url(url)
        self.events_file = events_file
        self.events = events  # timed events; the warm-up ones follow them in the file
        self.warm = warm
        self.timeout_s = 120.0 + events / 200  # s: only a hang or a crash reaches it

    def _worker(self, peer: Peer, name: str, settings: str, warm: int) -> _Process:
        args = ["worker", self.url, name, settings, str(self.events), str(warm)]
        return _Process(peer, args, self.timeout_s)

    def _produce(self, peer: Peer, name: str, settings: str, first: int, count: int) -> dict:
        args = ["producer", self.url, name, settings, str(self.events_file), str(first)]
        process = _Process(peer, [*args, str(count)], self.timeout_s)
        try:
            return process.expect("done")
        finally:
            process.close()

    def run(self, peer: Peer, settings: str, name: str) -> Figures:
        """The three phases; ``name`` is a prefix for this run's two queues."""
        full, empty = f"{name}.drain", f"{name}.e2e"
        if peer.name == "faststream":
            # FastStream creates a missing group at "$" (only entries added later): the
            # group of a worker deployed before the load, made here untimed, reads them all
            self.redis.xgroup_create(full, "bench", id="0", mkstream=True)
        produced = self._produce(peer, full, settings, 0, self.events)
        enqueue = self.events / (produced["end"] - produced["start"])

        worker = self._worker(peer, full, settings, 0)
        try:
            done = worker.expect("done")
        finally:
            worker.close()
        drain = self.events / (done["last"] - done["start"])

        worker = self._worker(peer, empty, settings, self.warm)
        try:
            worker.expect("ready")
            self._produce(peer, empty, settings, self.events, self.warm)
            worker.expect("warm")
            time.sleep(IDLE_BEFORE_E2E_S)
            produced = self._produce(peer, empty, settings, 0, self.events)
            done = worker.expect("done")
        finally:
            worker.close()
        end_to_end = self.events / (done["last"] - produced["start"])
        return Figures(enqueue, drain, end_to_end)

    def delete_keys(self, token: str) -> None:
        """Every key a run wrote carries ``token`` in its name (queue names, stream tags)."""
        batch = list(self.redis.scan_iter(match=f"*{token}*", count=1000))
        for at in range(0, len(batch), 1000):
            self.redis.unlink(*batch[at : at + 1000])
