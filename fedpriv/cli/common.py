"""What every ``fedpriv`` command shares: the consoles, exit codes and error exit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_RUN_FAILED", "EXIT_SIGINT", "EXIT_SIGTERM",
           "fail", "stderr", "stdout"]

stdout = Console()
stderr = Console(stderr=True)

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` to stderr and return the Exit to raise.

    The message is printed as it is: ``pip install 'fedpriv[data]'`` or a path with
    brackets is not rich markup.
    """
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
