"""The ``fedpriv`` command line, one module per command.

``simulate`` (:mod:`fedpriv.cli.simulate`), ``audit`` (:mod:`fedpriv.cli.audit`),
``bench`` (:mod:`fedpriv.cli.bench`), ``certs`` (:mod:`fedpriv.cli.certs`) and
``deploy`` (:mod:`fedpriv.cli.deploy`); exit codes in :mod:`fedpriv.cli.common`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fedpriv.cli.audit import audit
from fedpriv.cli.bench import bench
from fedpriv.cli.certs import certs_app
from fedpriv.cli.common import EXIT_OK, EXIT_SIGINT, stderr, stdout
from fedpriv.cli.deploy import deploy_app
from fedpriv.cli.simulate import simulate

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedpriv",
    help="Federated, privacy-preserving training on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("fedpriv")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        stdout.print(f"fedpriv {text}", highlight=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.",
    )] = False,
) -> None:
    """Federated, privacy-preserving training on Flower."""



app.command()(simulate)
app.command()(audit)
app.command()(bench)
app.add_typer(certs_app, name="certs")
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(EXIT_SIGINT)
