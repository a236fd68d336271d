"""What every `identity` command shares: its argument parser and its one-line failure.

Exit status, one meaning each (docs/operations.md, "Exit status"):

    0    done (and `identity` or a command group alone: its help)
    1    failed: an unknown id, a value the service refused, the database unreachable,
         problems found by `identity check`, a port already taken
    2    usage or configuration: a bad argument, a bad or missing variable (every problem,
         one line each)
    3    `identity serve`: the service could not start (the log says why)
    130  interrupted (Ctrl-C) before the service was serving
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

OK, FAILED, USAGE, NOT_STARTED, INTERRUPTED = 0, 1, 2, 3, 130


class CommandError(Exception):
    """A problem to report as one line, exit status 1."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help  # "(default: None)" says nothing
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with our manners: help that shows each option's default, and a usage error
    that is one line and a pointer to the help (exit status 2)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        print(f"Try '{self.prog} --help'.", file=sys.stderr)
        sys.exit(USAGE)


def group(parser: argparse.ArgumentParser, dest: str) -> Any:
    """Subcommands of `parser`; `parser` alone (no subcommand given) prints its help."""
    parser.set_defaults(handler=None, help_of=parser)
    return parser.add_subparsers(dest=dest, metavar="COMMAND", title="commands")


def command(commands: Any, name: str, summary: str, handler: Any) -> Parser:
    """One subcommand: `summary` in its group's list and atop its own help."""
    parser: Parser = commands.add_parser(name, help=summary, description=summary)
    parser.set_defaults(handler=handler)
    return parser
