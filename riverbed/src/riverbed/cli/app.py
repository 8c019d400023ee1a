"""``main``: run one ``riverbed`` command and turn what went wrong into an exit code.

Exit codes: 0 done, 1 Redis failed (or a purge was not confirmed), 2 a usage error (the
message says what to give instead), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO

from pydantic import ValidationError
from redis.exceptions import RedisClusterException, RedisError
from rich.console import Console

from riverbed.cli.parser import build_parser
from riverbed.cli.usage import UsageError
from riverbed.connection import Redis, connect, redacted_url
from riverbed.settings import RedisSettings

#: what every ``cmd_*`` is: Redis, the parsed arguments, stdout and stderr -> exit code
Command = Callable[[Redis, argparse.Namespace, Console, Console], Coroutine[Any, Any, int]]


async def _run(
    command: Command, args: argparse.Namespace, settings: RedisSettings, out: Console, err: Console
) -> int:
    redis = connect(settings)
    try:
        return await command(redis, args, out, err)
    finally:
        await redis.aclose()


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one command; output goes to ``stdout``/``stderr`` (default: the process's)."""
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    out = Console(file=stdout, highlight=False, soft_wrap=True)
    err = Console(file=stderr, stderr=stderr is None, highlight=False, soft_wrap=True)

    def fail(message: str, code: int) -> int:
        err.print(f"riverbed: {message}", markup=False)
        return code

    try:
        settings = (
            RedisSettings(url=args.redis_url) if hasattr(args, "redis_url") else RedisSettings()
        )
    except ValidationError as error:
        return fail("invalid Redis URL: " + "; ".join(str(e["msg"]) for e in error.errors()), 2)
    where = redacted_url(settings.url.get_secret_value())
    try:
        return asyncio.run(_run(args.run, args, settings, out, err))
    except UsageError as error:
        return fail(str(error), 2)
    except (RedisError, RedisClusterException) as error:
        return fail(f"Redis at {where} failed: {error}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `riverbed tail -f | head`: the reader left
        return 0
