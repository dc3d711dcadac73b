"""The ``gcdbench`` command line: one module per subcommand."""

from __future__ import annotations

import sys

import click

from gcdbench import __version__
from gcdbench.errors import GcdbenchError


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit code 2: ours, and click's own
    usage errors (a bad --variant choice, a non-integer --workers), which click would print
    as a usage block."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
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


def _add_commands() -> None:
    from gcdbench.cli import data, leaderboard, listing, llm, run, show

    cli.add_command(run.run)
    cli.add_command(listing.plugins)
    cli.add_command(listing.list_)
    cli.add_command(data.data)
    cli.add_command(leaderboard.leaderboard)
    cli.add_command(show.show)
    cli.add_command(llm.llm)


_add_commands()


def main() -> None:
    cli()
