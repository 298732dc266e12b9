"""The one place grefel makes its rich consoles.

Every command prints through :func:`make_console`: soft wrapping keeps error lines and printed
paths (``report: .../report.html``) whole instead of folding them at the terminal's width; tables
and progress bars still fit the terminal.
"""

from __future__ import annotations


def make_console(stderr: bool = False, quiet: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, quiet=quiet, soft_wrap=True)
