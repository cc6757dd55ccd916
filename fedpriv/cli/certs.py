"""``fedpriv certs``: the CA, the SuperLink's certificate and node keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedpriv.cli.common import fail, stdout

__all__ = ["certs_app"]

certs_app = typer.Typer(help="Certificates and node keys for a deployed federation.",
                        no_args_is_help=True)


@certs_app.command("init")
def certs_init(
    directory: Annotated[Path, typer.Argument(help="Where to write the CA and TLS files.")],
    host: Annotated[list[str], typer.Option(
        "--host", help="IP address or DNS name the SuperLink is reached at; repeatable.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a CA and a SuperLink TLS certificate for the given hosts."""
    from fedpriv.certs import CertError, init_certs

    try:
        paths = init_certs(directory, host, force=force)
    except CertError as err:
        raise fail(str(err)) from None
    for label, path in (("CA certificate", paths.ca_cert), ("CA key (0600)", paths.ca_key),
                        ("SuperLink certificate", paths.server_cert),
                        ("SuperLink key (0600)", paths.server_key)):
        stdout.print(f"{label:>22}: {path}")
    stdout.print("Give ca.pem to every SuperNode; keep ca.key offline.")


@certs_app.command("node")
def certs_node(
    name: Annotated[str, typer.Argument(help="The SuperNode's name.")],
    directory: Annotated[Path, typer.Option("--dir", help="The certs directory.")] = Path("certs"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing keys.")] = False,
) -> None:
    """Write a SuperNode's authentication key pair (register the .pub with the SuperLink)."""
    from fedpriv.certs import CertError, node_key

    try:
        private, public = node_key(directory, name, force=force)
    except CertError as err:
        raise fail(str(err)) from None
    stdout.print(f"private key (0600, stays on the device): {private}")
    stdout.print(f"public key: {public}")
    stdout.print(f"register it: flwr supernode register {public} <superlink-connection>")
