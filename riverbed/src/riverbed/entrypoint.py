"""One command line for every service: ``riverbed-<service>`` (or ``… serve``) runs it, and
each service adds its own admin commands (``migrate``, ``suppressions``, …) as
:class:`Command` values, so every service's ``cli.main`` reads and behaves the same."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from riverbed.service import Service


@dataclass(frozen=True)
class Command:
    """A sub-command of a service's command line."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]  # returns the exit status
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def service_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    serve: Callable[[], Service[Any, Any]],
    commands: Sequence[Command] = (),
) -> int:
    """Parse ``argv`` and run the command it names; without one, or with ``serve``, build
    the service with ``serve()`` and run it until SIGTERM. Returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.add_parser("serve", help="run the service (the default)")
    for command in commands:
        command_parser = subparsers.add_parser(command.name, help=command.help)
        if command.add_arguments is not None:
            command.add_arguments(command_parser)
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        serve().run()
        return 0
    chosen = next(command for command in commands if command.name == args.command)
    return chosen.run(args)
