"""``fedpriv simulate``: run a federation on Flower's simulation engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedpriv.cli.common import EXIT_OK, EXIT_RUN_FAILED, EXIT_SIGINT, fail, stderr, stdout
from fedpriv.cli.signals import stop_on_signals
from fedpriv.config import ConfigError, RunConfig

__all__ = ["announce_privacy", "check_feasible", "keys_table", "parse_sets", "simulate"]


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
    resume: Annotated[
        Path | None,
        typer.Option("--resume", metavar="RUN_DIR",
                     help="Continue an interrupted or crashed run from its last checkpoint."),
    ] = None,
) -> None:
    """Run a federation on Flower's simulation engine and record it in a run directory."""
    from simulations.scenarios import ScenarioError, list_scenarios, load_scenario

    if resume is not None:
        if scenario is not None or set_ or out is not None:
            raise fail("--resume continues a run with the configuration it recorded; it "
                       "takes no scenario, --set or --out")
        _resume(resume, verbose)

    if list_:
        table = Table(title="shipped scenarios")
        table.add_column("name", style="cyan")
        table.add_column("description")
        for s in list_scenarios():
            table.add_row(s.name, s.description)
        stdout.print(table)
        raise typer.Exit(EXIT_OK)
    if keys:
        stdout.print(keys_table())
        raise typer.Exit(EXIT_OK)

    # Everything the user gave is checked before a directory or Ray exists.
    try:
        chosen = load_scenario(scenario)
        cfg = RunConfig.from_mapping(chosen.values)
    except ScenarioError as err:
        raise fail(str(err)) from None
    except ConfigError as err:
        raise fail(f"scenario {chosen.name!r}: {err}") from None
    try:
        cfg = RunConfig.from_mapping(parse_sets(set_ or []), base=cfg).resolved()
        check_feasible(cfg)
        cfg = announce_privacy(cfg)
    except ConfigError as err:
        raise fail(str(err)) from None

    from server.rundir import RunDirectory, default_run_dir

    run_dir = RunDirectory(out if out is not None else default_run_dir(chosen.name))
    try:
        run_dir.create()
    except (FileExistsError, OSError) as err:
        raise fail(f"--out: {err}") from None
    # Simulated clients keep their own ledgers under the run directory; every ledger
    # names the run by its directory's name.
    cfg = cfg.with_values(run_dir=str(run_dir.path.resolve()),
                          run_id=run_dir.path.name)
    run_dir.write_config(cfg.to_flat(), scenario=chosen.name)
    _run(cfg, run_dir, chosen.name, verbose, resume=False)


def _resume(path: Path, verbose: bool) -> None:
    """``--resume RUN_DIR``: check the directory, then continue the run it holds."""
    from server.rundir import RunDirectory

    run_dir = RunDirectory(path)
    try:
        run_dir.reopen()
        scenario, flat = run_dir.read_config()
        cfg = RunConfig.from_mapping(flat).resolved()
    except (OSError, ValueError) as err:
        raise fail(f"--resume: {err}") from None
    except ConfigError as err:
        raise fail(f"--resume: {path / RunDirectory.CONFIG}: {err}") from None
    summary_path = path / RunDirectory.SUMMARY
    if summary_path.exists():
        try:
            status = json.loads(summary_path.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        if status == "completed":
            raise fail(f"--resume: {path} is a completed run; there is nothing to resume")
        if status == "stopped":
            raise fail(f"--resume: {path} stopped at its privacy budget; resuming would "
                       "spend past it")
    if Path(cfg.deployment.run_dir).resolve() != path.resolve():
        raise fail(f"--resume: {path} records run-dir {cfg.deployment.run_dir!r}; the clients' "
                   "ledgers live there. Resume it where it ran")
    from fedpriv.config import DpMode
    from server.checkpoint import ResumeError, check_resumable

    try:
        check_resumable(run_dir, private=cfg.privacy.dp_mode is not DpMode.NONE)
    except ResumeError as err:
        raise fail(f"--resume: {err}") from None
    try:
        cfg = announce_privacy(cfg)
    except ConfigError as err:
        raise fail(f"--resume: {err}") from None
    stdout.print(f"resuming {path} ({scenario})", highlight=False)
    _run(cfg, run_dir, scenario, verbose, resume=True)


def _run(cfg: RunConfig, run_dir: Any, scenario: str, verbose: bool, *, resume: bool) -> None:
    """Run the simulation, print its summary and exit with its status."""
    from server.reporting import idle_rounds
    from server.rundir import RunDirectory
    from simulations.driver import simulate as run_sim
    from simulations.progress import RichReporter, summary_table

    stop_on_signals(run_dir)
    try:
        run_sim(cfg, run_dir, scenario=scenario, reporter=RichReporter(stdout),
                verbose=verbose, resume=resume)
    except Exception as err:  # the run's own failure: recorded in summary.json
        stderr.print(f"[bold red]run failed:[/] {type(err).__name__}: {err}", highlight=False)
    summary_path = run_dir.path / RunDirectory.SUMMARY
    if not summary_path.exists():
        raise fail(f"the run ended without a summary; see {run_dir.path}", EXIT_RUN_FAILED)
    summary = json.loads(summary_path.read_text())
    stdout.print(summary_table(summary))
    stdout.print(f"run directory: {run_dir.path}")
    if summary.get("server_key_fingerprint"):
        stdout.print(f"ledger key fingerprint: {summary['server_key_fingerprint']} (keep it: "
                   f"`fedpriv audit --server-key {summary['server_key_fingerprint']}` pins it)",
                   highlight=False)
    idle = idle_rounds(summary)
    if idle:
        stderr.print(f"[bold yellow]warning:[/] {idle}", highlight=False)
    if summary["status"] == "stopped":  # a budget stop is normal operation
        stdout.print(f"stopped: {summary.get('reason', '')}", highlight=False)
    if summary["status"] == "interrupted":
        raise typer.Exit(getattr(run_dir, "exit_code", EXIT_SIGINT))
    raise typer.Exit(EXIT_OK if summary["status"] in ("completed", "stopped")
                     else EXIT_RUN_FAILED)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from ``--set`` as a dict; exit 2 on a malformed pair."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set takes KEY=VALUE, got {pair!r}")
        values[key.strip()] = value.strip()
    return values


def keys_table() -> Table:
    """Every run-config key with its allowed values, default and meaning."""
    table = Table(title="run-config keys (scenario files and --set KEY=VALUE)")
    table.add_column("key", no_wrap=True)
    for col in ("allowed", "default", "meaning"):
        table.add_column(col, overflow="fold")
    for row in RunConfig.describe():
        table.add_row(*row)
    return table


def announce_privacy(cfg: RunConfig) -> RunConfig:
    """Calibrate the server's noise and say, before round 1, what the run will spend."""
    from fedpriv.config import DpMode
    from fedpriv.dp_plan import with_user_noise
    from server.planning import privacy_plan

    if cfg.privacy.dp_mode is DpMode.NONE:
        return cfg
    cfg = with_user_noise(cfg)
    plan = privacy_plan(cfg)
    style = "bold yellow" if plan["warning"] or cfg.training.reproducible else "bold"
    stdout.print(f"[{style}]privacy:[/] {plan['text']}", highlight=False, soft_wrap=True)
    return cfg


def check_feasible(cfg: RunConfig) -> None:
    """Checks that need the data (cheap: the data set ships in a package)."""
    from fedpriv.tasks import load_task_data

    n = len(load_task_data(cfg).train)
    if cfg.training.clients > n:
        raise ConfigError(
            "clients", f"must be at most the {n} training examples of {cfg.data.dataset.value}, "
            f"got {cfg.training.clients}"
        )
