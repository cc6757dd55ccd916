"""The ``fedpriv`` command line: ``simulate`` (and more as they land)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedpriv.config import ConfigError, RunConfig

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedpriv",
    help="Federated, privacy-preserving training on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_out = Console()
_err = Console(stderr=True)

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _fail(f"--set takes KEY=VALUE, got {pair!r}")
        values[key.strip()] = value.strip()
    return values


def _keys_table() -> Table:
    table = Table(title="run-config keys (scenario files and --set KEY=VALUE)")
    table.add_column("key", no_wrap=True)
    for col in ("allowed", "default", "meaning"):
        table.add_column(col, overflow="fold")
    for row in RunConfig.describe():
        table.add_row(*row)
    return table


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("fedpriv")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        _out.print(f"fedpriv {text}", highlight=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.",
    )] = False,
) -> None:
    """Federated, privacy-preserving training on Flower."""


@app.command()
def simulate(
    scenario: Annotated[
        str | None,
        typer.Argument(help="A shipped scenario name (see --list) or a scenario .toml file."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY=VALUE",
                     help="Override one run-config key; repeatable."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default runs/<timestamp>-<scenario>)."),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the shipped scenarios and exit.")
    ] = False,
    keys: Annotated[
        bool, typer.Option("--keys", help="List every run-config key and exit.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's own logs.")
    ] = False,
) -> None:
    """Run a federation on Flower's simulation engine and record it in a run directory."""
    from simulations.scenarios import ScenarioError, list_scenarios, load_scenario

    if list_:
        table = Table(title="shipped scenarios")
        table.add_column("name", style="cyan")
        table.add_column("description")
        for s in list_scenarios():
            table.add_row(s.name, s.description)
        _out.print(table)
        raise typer.Exit(EXIT_OK)
    if keys:
        _out.print(_keys_table())
        raise typer.Exit(EXIT_OK)

    # Everything the user gave is checked before a directory or Ray exists.
    try:
        chosen = load_scenario(scenario)
        cfg = RunConfig.from_mapping(chosen.values)
    except ScenarioError as err:
        raise _fail(str(err)) from None
    except ConfigError as err:
        raise _fail(f"scenario {chosen.name!r}: {err}") from None
    try:
        cfg = RunConfig.from_mapping(_parse_sets(set_ or []), base=cfg).resolved()
        _check_feasible(cfg)
        cfg = _announce_privacy(cfg)
    except ConfigError as err:
        raise _fail(str(err)) from None

    from server.rundir import RunDirectory, default_run_dir
    from simulations.driver import simulate as run_sim
    from simulations.progress import RichReporter, summary_table

    run_dir = RunDirectory(out if out is not None else default_run_dir(chosen.name))
    try:
        run_dir.create()
    except (FileExistsError, OSError) as err:
        raise _fail(f"--out: {err}") from None
    # Simulated clients keep their own ledgers under the run directory.
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir.path.resolve()))
    run_dir.write_config(cfg.to_flat(), scenario=chosen.name)

    _stop_on_signals(run_dir)
    try:
        run_sim(cfg, run_dir, scenario=chosen.name, reporter=RichReporter(_out),
                verbose=verbose)
    except Exception as err:  # the run's own failure: recorded in summary.json
        _err.print(f"[bold red]run failed:[/] {type(err).__name__}: {err}", highlight=False)
    summary_path = run_dir.path / RunDirectory.SUMMARY
    if not summary_path.exists():
        raise _fail(f"the run ended without a summary; see {run_dir.path}", EXIT_RUN_FAILED)
    summary = json.loads(summary_path.read_text())
    _out.print(summary_table(summary))
    _out.print(f"run directory: {run_dir.path}")
    if summary.get("server_key_fingerprint"):
        _out.print(f"ledger key fingerprint: {summary['server_key_fingerprint']} (keep it: "
                   f"`fedpriv audit --server-key {summary['server_key_fingerprint']}` pins it)",
                   highlight=False)
    if summary["status"] == "stopped":  # a budget stop is normal operation
        _out.print(f"stopped: {summary.get('reason', '')}", highlight=False)
    if summary["status"] == "interrupted":
        raise typer.Exit(getattr(run_dir, "exit_code", EXIT_SIGINT))
    raise typer.Exit(EXIT_OK if summary["status"] in ("completed", "stopped")
                     else EXIT_RUN_FAILED)


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made with a dp-mode.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (for machines).")
    ] = False,
    server_key: Annotated[str | None, typer.Option(
        "--server-key", help="Fingerprint of the run's ledger key, as printed when the run "
        "ran: pins the federation ledger's signer.")] = None,
    roster: Annotated[Path | None, typer.Option(
        "--roster", help="The clients' identity roster (default RUN_DIR/identities/"
        "roster.json).")] = None,
) -> None:
    """Verify every privacy ledger of a run and recompute its epsilon independently.

    Exit 0 when every hash chain verifies, the run's reported epsilon matches, and no
    budget is exceeded; 1 otherwise (the problems name the ledger entry or client).
    Writes audit.json, audit.md and audit.png into the run directory.
    """
    from fedpriv.audit import ACCOUNTANTS, audit_run, render_table, write_report

    if not run_dir.is_dir():
        raise _fail(f"RUN_DIR: {str(run_dir)!r} is not a directory")
    report = audit_run(run_dir, server_key=server_key, roster=roster)
    written = write_report(report, run_dir) if report.scopes else []
    if as_json:
        _out.print_json(json.dumps(report.to_json()))
    else:
        _out.print(render_table(report))
        for name, what in ACCOUNTANTS.items():
            _out.print(f"ε ({name.upper()}): {what}", highlight=False)
        if report.empirical:
            e = report.empirical
            claimed = "-" if e["claimed"] is None else f"{e['claimed']:.3f}"
            _out.print(f"empirical ε ({e['canaries']} canaries, Andrew et al. 2024): "
                       f"{e['epsilon']:.3f}, claimed {claimed}", highlight=False)
        for path in written:
            _out.print(f"wrote {path}")
        for warning in report.warnings:
            _err.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if report.ok:
            _out.print("[bold green]audit passed[/]: every chain verifies, both accountants "
                       "agree with the reported epsilon, no budget exceeded")
        for problem in report.problems:
            _err.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_RUN_FAILED)


@app.command()
def bench(
    names: Annotated[list[str] | None, typer.Argument(
        help="Suites: dpsgd, accounting, secagg, round, utility (default: all).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small settings (minutes).")] = False,
) -> None:
    """Run the benchmark suites side by side; write bench/results/*.json and README.md.

    Needs the repository checkout (the suites live in bench/, beside the package).
    """
    try:
        from bench.suites.runner import SUITES, run_suites
    except ImportError:
        raise _fail("the benchmark suites live in the repository's bench/ directory: run "
                    "`fedpriv bench` from a checkout") from None
    unknown = sorted(set(names or []) - set(SUITES))
    if unknown:
        raise _fail(f"NAMES: must be among {{{', '.join(SUITES)}}}, got {', '.join(unknown)}")
    run_suites(list(names or []), quick)
    from bench.suites.common import RESULTS

    _out.print((RESULTS / "README.md").read_text(), markup=False, highlight=False)


certs_app = typer.Typer(help="Certificates and node keys for a deployed federation.",
                        no_args_is_help=True)
app.add_typer(certs_app, name="certs")


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
        raise _fail(str(err)) from None
    for label, path in (("CA certificate", paths.ca_cert), ("CA key (0600)", paths.ca_key),
                        ("SuperLink certificate", paths.server_cert),
                        ("SuperLink key (0600)", paths.server_key)):
        _out.print(f"{label:>22}: {path}")
    _out.print("Give ca.pem to every SuperNode; keep ca.key offline.")


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
        raise _fail(str(err)) from None
    _out.print(f"private key (0600, stays on the device): {private}")
    _out.print(f"public key: {public}")
    _out.print(f"register it: flwr supernode register {public} <superlink-connection>")


deploy_app = typer.Typer(help="Start Flower's SuperLink / SuperNode with secure defaults.",
                         no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


def _exec(cmd: list[str], dry_run: bool) -> None:
    import shlex

    if dry_run:
        print(shlex.join(cmd))
        raise typer.Exit(EXIT_OK)
    _err.print(f"$ {shlex.join(cmd)}", highlight=False, markup=False, soft_wrap=True)
    os.execvp(cmd[0], cmd)


def _insecure_warning() -> None:
    _err.print("[bold red]WARNING: --insecure: no TLS, no node authentication. Updates, "
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
            raise _fail(f"--certs: missing {', '.join(missing)}; run `fedpriv certs init`")
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
    port: Annotated[int, typer.Option("--port", help="Local ClientApp API port.")] = 9094,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS, no node auth.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command only.")] = False,
) -> None:
    """flower-supernode with TLS and node auth; its node config names data and budget.

    The node config carries the data directory, the device, the ledger path and the
    device's own privacy budget, which the ClientApp applies whatever the server asks.
    """
    from fedpriv.certs import CertError, node_paths, node_secagg_config

    if device not in {"auto", "cpu", "cuda"}:
        raise _fail(f"--device must be one of {{auto, cpu, cuda}}, got {device!r}")
    if not data_dir.is_dir():
        raise _fail(f"--data-dir: {str(data_dir)!r} is not a directory")
    if not max_epsilon > 0:
        raise _fail(f"--max-epsilon must be > 0, got {max_epsilon:g}")
    node_config = (f'data-dir="{data_dir.resolve()}" ledger-path="{ledger.resolve()}" '
                   f'device="{device}" client-max-epsilon={max_epsilon!r}')
    try:  # the node's secure-aggregation identity and the roster, out of band
        secagg = node_secagg_config(certs, name)
    except CertError as err:
        if not insecure:
            raise _fail(f"--certs: {err}") from None
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
            raise _fail(str(err)) from None
        files = [certs / "ca.pem", private, public]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise _fail(f"--certs: missing {', '.join(missing)}; run `fedpriv certs init` "
                        f"and `fedpriv certs node {name}`")
        cmd += ["--root-certificates", str(files[0]), "--auth-supernode-private-key",
                str(private), "--auth-supernode-public-key", str(public)]
    _exec(cmd, dry_run)


EXIT_SIGINT = 130
EXIT_SIGTERM = 143
#: Seconds the run gets to write its own summary after a signal before the CLI does.
_GRACE_SECONDS = 2.0


def _stop_on_signals(run_dir: Any) -> None:
    """SIGINT/SIGTERM: stop the run, write its summary as interrupted, exit 130/143.

    The federation stops before its next round; if it has not written its summary within
    a short grace period (a round may be waiting on clients), the summary is written from
    here with what was recorded so far (every ledger entry and metrics line is already
    on disk), the simulation's child processes (Ray) are stopped by PID, and the process
    exits.
    """
    import signal
    import threading

    def handler(signum: int, _frame: Any) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        run_dir.exit_code = code
        run_dir.stop.set()
        name = signal.Signals(signum).name
        threading.Thread(target=_finish_interrupted, args=(run_dir, code, name),
                         daemon=True).start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _finish_interrupted(run_dir: Any, code: int, name: str) -> None:
    import time

    _err.print(f"\n{name}: stopping the run ...", highlight=False)
    summary_path = run_dir.path / "summary.json"
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline and not summary_path.exists():
        time.sleep(0.1)
    if not summary_path.exists() and run_dir.on_interrupt is not None:
        try:
            run_dir.on_interrupt(f"{name} received")
        except Exception as err:  # still exit: the ledgers and metrics are on disk
            _err.print(f"could not write the summary: {type(err).__name__}: {err}")
    _err.print(f"interrupted: run directory {run_dir.path} (status 'interrupted' in "
               f"summary.json; `fedpriv audit {run_dir.path}` reports it as unfinished). "
               "Resuming a run is not supported yet: start a new one.", highlight=False,
               soft_wrap=True)
    _stop_children()
    os._exit(code)


def _stop_children() -> None:
    """SIGTERM, then SIGKILL, every descendant of this process (found in /proc)."""
    import signal
    import time

    def descendants(root: int) -> list[int]:
        parents: dict[int, list[int]] = {}
        for entry in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = entry.read_text().rsplit(")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        out, todo = [], [root]
        while todo:
            for child in parents.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out

    pids = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM and pids:
            time.sleep(1.0)


def _announce_privacy(cfg: RunConfig) -> RunConfig:
    """Calibrate user-level noise and say, before round 1, what the run will spend."""
    from fedpriv.config import DpMode
    from fedpriv.dp_plan import with_user_noise
    from server.planning import privacy_plan

    if cfg.dp_mode is DpMode.NONE:
        return cfg
    cfg = with_user_noise(cfg)
    plan = privacy_plan(cfg)
    style = "bold yellow" if plan["warning"] or cfg.reproducible else "bold"
    _out.print(f"[{style}]privacy:[/] {plan['text']}", highlight=False, soft_wrap=True)
    return cfg


def _check_feasible(cfg: RunConfig) -> None:
    """Checks that need the data (cheap: the data set ships in a package)."""
    from fedpriv.tasks import load_task_data

    n = len(load_task_data(cfg).train)
    if cfg.clients > n:
        raise ConfigError(
            "clients", f"must be at most the {n} training examples of {cfg.dataset.value}, "
            f"got {cfg.clients}"
        )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        _err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
