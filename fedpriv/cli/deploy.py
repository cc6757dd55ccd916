"""``fedpriv deploy``: Flower's SuperLink and SuperNodes with secure defaults."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer

from fedpriv.cli.common import EXIT_OK, fail, stderr
from fedpriv.config import DpMode

__all__ = ["deploy_app"]

deploy_app = typer.Typer(help="Start Flower's SuperLink / SuperNode with secure defaults.",
                         no_args_is_help=True)


#: Flower's SuperExec checks for a new message to run every second by default; a
#: round of secure aggregation is five messages per node, so a shorter interval saves
#: seconds per round at the cost of a few idle wake-ups. An operator's own value wins.
SUPEREXEC_POLL = ("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")


def _exec(cmd: list[str], dry_run: bool, env: dict[str, str] | None = None) -> None:
    """Replace this process with ``cmd``, ``env`` added to the environment (and shown)."""
    import shlex

    os.environ.setdefault(*SUPEREXEC_POLL)
    os.environ.update(env or {})
    shown = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()),
                      shlex.join(cmd)])
    if dry_run:
        print(shown)
        raise typer.Exit(EXIT_OK)
    stderr.print(f"$ {shown}", highlight=False, markup=False, soft_wrap=True)
    os.execvp(cmd[0], cmd)


def _insecure_warning() -> None:
    stderr.print("[bold red]WARNING: --insecure: no TLS, no node authentication. Updates, "
               "keys and ledgers travel in clear text. Never use this outside a lab.[/]")


@deploy_app.command("superlink")
def deploy_superlink(
    certs: Annotated[Path, typer.Option("--certs", help="Directory from `certs init`.")] = Path(
        "certs"),
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTPS port (Fleet + Control).")] = 9093,
    database: Annotated[str, typer.Option("--database", help="SuperLink state file.")] = (
        "superlink.db"),
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS, no node auth.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command only.")] = False,
) -> None:
    """flower-superlink with TLS, SuperNode authentication, no runtime installs."""
    cmd = ["flower-superlink", "--host", host, "--port", str(port), "--database", database,
           "--disable-runtime-dependency-installation"]
    if insecure:
        _insecure_warning()
        cmd.append("--insecure")
    else:
        files = [certs / "ca.pem", certs / "superlink.pem", certs / "superlink.key"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise fail(f"--certs: missing {', '.join(missing)}; run `fedpriv certs init`")
        cmd += ["--ssl-ca-certfile", str(files[0]), "--ssl-certfile", str(files[1]),
                "--ssl-keyfile", str(files[2]), "--enable-supernode-auth"]
    _exec(cmd, dry_run)


@deploy_app.command("supernode")
def deploy_supernode(
    name: Annotated[str, typer.Argument(help="The node's name (its key is certs/nodes/NAME).")],
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink host:port.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Directory of .npz files.")],
    ledger: Annotated[Path, typer.Option("--ledger", help="This node's privacy ledger.")],
    certs: Annotated[Path, typer.Option("--certs", help="Holds ca.pem and nodes/NAME.")] = Path(
        "certs"),
    max_epsilon: Annotated[float, typer.Option(
        "--max-epsilon", help="This device's own privacy budget (inf: none).")] = math.inf,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
    dp_mode: Annotated[str, typer.Option(
        "--dp-mode", help="The DP mode this device requires of every run ('' : any; the "
        "server cannot change it).")] = "",
    port: Annotated[int, typer.Option("--port", help="Local ClientApp API port.")] = 9094,
    threads: Annotated[int, typer.Option(
        "--threads", help="CPU threads for training (0: one per core, torch's default). "
        "Set 1 when several SuperNodes share one machine.")] = 0,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS, no node auth.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command only.")] = False,
) -> None:
    """flower-supernode with TLS and node auth; its node config names data and budget.

    The node config carries the data directory, the device, the ledger path and the
    device's own privacy budget, which the ClientApp applies whatever the server asks.
    ``--threads`` bounds torch's intra-op threads in the ClientApps this node starts
    (``OMP_NUM_THREADS``, which they inherit): with several SuperNodes on one machine,
    a thread per core in each makes their threads spin against each other (one SGD step
    of a small model measured 140x slower).
    """
    from fedpriv.certs import CertError, node_paths, node_secagg_config

    if device not in {"auto", "cpu", "cuda"}:
        raise fail(f"--device must be one of {{auto, cpu, cuda}}, got {device!r}")
    if not data_dir.is_dir():
        raise fail(f"--data-dir: {str(data_dir)!r} is not a directory")
    if not max_epsilon > 0:
        raise fail(f"--max-epsilon must be > 0, got {max_epsilon:g}")
    if threads < 0:
        raise fail(f"--threads must be >= 0 (0: one per core), got {threads}")
    modes = [m.value for m in DpMode]
    if dp_mode and dp_mode not in modes:
        raise fail(f"--dp-mode must be one of {modes} (or empty), got {dp_mode!r}")
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
    node_config = (f'data-dir="{data_dir.resolve()}" ledger-path="{ledger.resolve()}" '
                   f'device="{device}" client-max-epsilon={max_epsilon!r}')
    if dp_mode:
        node_config += f' dp-mode="{dp_mode}"'
    try:  # the node's secure-aggregation identity and the roster, out of band
        secagg = node_secagg_config(certs, name)
    except CertError as err:
        if not insecure:
            raise fail(f"--certs: {err}") from None
        secagg = {}
    for key, value in secagg.items():
        node_config += f' {key}="{value}"' if isinstance(value, str) else f" {key}={value}"
    cmd = ["flower-supernode", "--superlink", superlink, "--node-config", node_config,
           "--port", str(port)]
    if insecure:
        _insecure_warning()
        cmd.append("--insecure")
    else:
        try:
            private, public = node_paths(certs, name)
        except CertError as err:
            raise fail(str(err)) from None
        files = [certs / "ca.pem", private, public]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise fail(f"--certs: missing {', '.join(missing)}; run `fedpriv certs init` "
                        f"and `fedpriv certs node {name}`")
        cmd += ["--root-certificates", str(files[0]), "--auth-supernode-private-key",
                str(private), "--auth-supernode-public-key", str(public)]
    _exec(cmd, dry_run, env)
