"""The Typer application every command module registers on.

Each command lives in its own module of this package (``grefel_cli/prepare.py`` ...), parses its
options and calls one library function. Library errors (:class:`grefel.core.errors.GrefelError`) come
out as one line, ``Error: ...``, with exit status 1 and no traceback. Keep heavy imports (torch,
h5py) inside the command functions so that ``grefel --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from grefel.core.errors import GrefelError, error_line


def reflow_help(text: str) -> str:
    """Join the lines of each prose paragraph of a command's docstring, so that rich wraps them to
    the terminal instead of keeping the source's line breaks (ragged at 80 columns). Paragraphs with
    indented lines (the examples) or list items keep their lines."""
    import inspect

    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        keep = any(line.startswith((" ", "- ", "* ")) for line in lines)
        out.append(para if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


class _Group(TyperGroup):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for cmd in self.commands.values():
            if cmd.help:
                cmd.help = reflow_help(cmd.help)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GrefelError as e:
            _fail(error_line(e))
        except FileNotFoundError as e:  # a path the user gave that vanished mid-run
            _fail(f"{e.strerror}: {e.filename}")


def _fail(message: str):
    """Print ``Error: message`` on one line to stderr and exit with status 1 (no traceback)."""
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(1)


app = typer.Typer(
    cls=_Group,
    name="grefel",
    help="Reproduce, stress-test and extend GReFEL (geometry-aware reliable facial expression learning).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def version_callback(value: bool):
    if value:
        from grefel.core.version import __version__

        typer.echo(f"grefel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
):
    """Reproduce, stress-test and extend GReFEL.

    Typical session: [bold]grefel prepare rafdb /raw/RAF-DB[/bold], [bold]grefel train --dataset rafdb[/bold],
    [bold]grefel report --ckpt runs/<run>/best.pt[/bold]. Try [bold]grefel demo[/bold] first.
    """
