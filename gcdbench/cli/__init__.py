"""The ``gcdbench`` command line: one module per subcommand.

A subcommand's module is imported when that subcommand is asked for (``gcdbench show``
imports only ``gcdbench.cli.show``), so a command starts without loading the others.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from gcdbench import __version__
from gcdbench.errors import GcdbenchError

#: subcommand -> (module in gcdbench.cli, the click command in it)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run"),
    "plugins": ("listing", "plugins"),
    "list": ("listing", "list_"),
    "data": ("data", "data"),
    "leaderboard": ("leaderboard", "leaderboard"),
    "show": ("show", "show"),
    "llm": ("llm", "llm"),
    "feedback": ("feedback", "feedback"),
    "sweep": ("sweep", "sweep"),
    "status": ("sweep", "status"),
    "report": ("report", "report"),
}


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit code 2: ours, and click's own
    usage errors (a bad --variant choice, a non-integer --workers), which click would print
    as a usage block. Subcommands load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SUBCOMMANDS:
            self._load(cmd_name)
        elif cmd_name not in self.commands:
            # An unknown name: click suggests the closest from ``self.commands``, so all.
            for name in _SUBCOMMANDS:
                self._load(name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> None:
        if name not in self.commands:
            module, attribute = _SUBCOMMANDS[name]
            loaded = importlib.import_module(f"gcdbench.cli.{module}")
            self.add_command(getattr(loaded, attribute), name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GcdbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `gcdbench llm` alone: click shows the help, as asked
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            message = " ".join(exc.format_message().split())  # one line, always
            click.echo(f"error: {message} See {where} --help.", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="gcdbench")
def cli() -> None:
    """Benchmark harness for Generalized Category Discovery on text."""


def main() -> None:
    cli()
