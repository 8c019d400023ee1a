"""What the gateway's replication guarantee costs: ``GATEWAY_MIN_REPLICAS=1`` (a ``WAIT``
for one replica after each request's appends) against ``0`` (off, the default).

A throwaway primary and one replica of it (``redis-server``, loopback); the gateway as its
own process pointed at the primary, and the load of ``bench/gateway.py`` (the same
single-event and batched rounds, the same load generator process), alternately with
replication off and on. Prints events/s and p50/p99 of a request for each.

Run: ``uv run python bench/replication.py [--events N] [--repeat N]``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import gateway as gateway_bench  # bench/gateway.py: its rounds, load generator and gateway
from _common import Options, bench_line, emit, ms_line, note, parse_options
from redis.asyncio import Redis as RawRedis

from riverbed import eventloop
from riverbed.testing import RedisServer, wait_for

TIMEOUT_MS = 1_000  # GATEWAY_REPLICATION_TIMEOUT_MS: never reached with a healthy replica


def _environment_with(min_replicas: int) -> Any:
    plain = gateway_bench._gateway_environment

    def environment(*args: Any) -> dict[str, str]:
        env: dict[str, str] = plain(*args)
        env["GATEWAY_MIN_REPLICAS"] = str(min_replicas)
        env["GATEWAY_REPLICATION_TIMEOUT_MS"] = str(TIMEOUT_MS)
        return env

    return environment


async def _rounds(url: str, workdir: Path, options: Options, min_replicas: int) -> list[Any]:
    """The best single and batched round of a gateway with ``min_replicas``."""
    gateway_bench._gateway_environment = _environment_with(min_replicas)
    monitor = RawRedis.from_url(url)
    best = []
    try:
        async with gateway_bench.running_gateway(url, workdir) as gateway:
            side = gateway_bench.GatewaySide(gateway, monitor, workdir)
            await side.prepare()
            try:
                for comparison in gateway_bench._comparisons(options):
                    await side.round(
                        comparison.bodies[: comparison.warm_up],
                        comparison.path,
                        comparison.concurrency,
                    )
                    runs = [
                        await side.round(comparison.bodies, comparison.path, comparison.concurrency)
                        for _ in range(options.repeat)
                    ]
                    name = f"{comparison.name}-min-replicas-{min_replicas}"
                    gateway_bench._report_refusals(name, runs)
                    best.append(gateway_bench._fastest(runs))
            finally:
                await side.finish()
    finally:
        await monitor.aclose()
    return best


async def run(options: Options) -> list[str]:
    directory = Path(tempfile.mkdtemp(prefix="rb-bench-replication-"))
    (directory / "primary").mkdir()
    (directory / "replica").mkdir()
    primary = RedisServer(directory / "primary")
    replica = RedisServer(directory / "replica")
    try:
        primary.start()
        replica.extra_config["replicaof"] = f"127.0.0.1 {primary.port}"
        replica.start()
        linked = RawRedis(port=replica.port)

        async def link_up() -> bool:
            return (await linked.info("replication"))["master_link_status"] == "up"

        await wait_for(link_up, what="the replica's link")
        await linked.aclose()
        note(f"primary :{primary.port}, replica :{replica.port}; best of {options.repeat}")
        off = await _rounds(primary.url, directory, options, 0)
        on = await _rounds(primary.url, directory, options, 1)
        lines = []
        for name, plain, waited in zip(("gateway-single", "gateway-batched"), off, on, strict=True):
            lines.append(
                emit(
                    bench_line(
                        f"{name}-wait-1-replica",
                        waited.per_second,
                        "events/s",
                        f"{name}-no-wait",
                        plain.per_second,
                    )
                )
            )
            for q in (50, 99):
                lines.append(
                    emit(
                        ms_line(
                            f"{name}-wait-1-replica-p{q}",
                            waited.percentile_ms(q),
                            f"{name}-no-wait-p{q}",
                            plain.percentile_ms(q),
                        )
                    )
                )
        return lines
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    eventloop.run(run(parse_options(__doc__.splitlines()[0], argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
