"""Run every Riverbed benchmark: consume, publish (single, batched), delay store, gateway,
end-to-end latency.

Prints one line per figure on stdout, each with its baseline measured in the
same run (the form of docs/conventions.md); notes for a human go to stderr. Nothing is
asserted: the figures are for reading. See bench/README.md.

    uv run --frozen python bench/run_all.py [--events N] [--repeat R] [--profile]
"""

from __future__ import annotations

import platform
import sys

import consume
import delay
import gateway
import latency
import publish
from _common import Options, bench_redis, note, parse_options

from riverbed import eventloop


async def run_all(url: str, options: Options) -> list[str]:
    lines = await consume.run(url, options)
    lines += await publish.run(url, options)
    lines += await delay.run(url, options)
    lines += await gateway.run(url, options)
    lines += await latency.run(url, options)
    return lines


def main(argv: list[str] | None = None) -> int:
    options = parse_options(__doc__.splitlines()[0], argv)
    with bench_redis() as (url, where):
        note(
            f"Redis: {where}; Python {platform.python_version()}; {options.events} events "
            f"consumed and batch-published, {max(options.events // 5, 1)} single-published; "
            f"best of {options.repeat} alternating rounds after a warm-up"
        )
        # the loop the services run on (uvloop), as each benchmark run alone uses
        eventloop.run(run_all(url, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
