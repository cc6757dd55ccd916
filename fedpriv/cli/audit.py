"""``fedpriv audit``: verify a run's ledgers and recompute its epsilon independently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedpriv.cli.common import EXIT_OK, EXIT_RUN_FAILED, fail, stderr, stdout

__all__ = ["audit"]


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
    from fedpriv.audit import ACCOUNTANTS, DISTRIBUTED_ACCOUNTANTS, audit_run
    from fedpriv.audit_report import render_table, write_report

    if not run_dir.is_dir():
        raise fail(f"RUN_DIR: {str(run_dir)!r} is not a directory")
    report = audit_run(run_dir, server_key=server_key, roster=roster)
    written = write_report(report, run_dir) if report.scopes else []
    if as_json:
        stdout.print_json(json.dumps(report.to_json()))
    else:
        stdout.print(render_table(report))
        bounds = sorted({b for s in report.scopes for b in s.bounds})
        names = DISTRIBUTED_ACCOUNTANTS if bounds else ACCOUNTANTS
        for name, what in names.items():
            stdout.print(f"ε ({name.upper()}): {what}", highlight=False, soft_wrap=True)
        for scope in report.scopes:
            if scope.bounds:
                stdout.print(f"{scope.scope}: {', '.join(scope.mechanisms)}, bound: "
                             f"{'; '.join(scope.bounds)}", highlight=False, soft_wrap=True)
                break
        if report.empirical:
            e = report.empirical
            claimed = "-" if e["claimed"] is None else f"{e['claimed']:.3f}"
            stdout.print(f"empirical ε ({e['canaries']} canaries, Andrew et al. 2024): "
                       f"{e['epsilon']:.3f}, claimed {claimed}", highlight=False)
        for path in written:
            stdout.print(f"wrote {path}")
        for warning in report.warnings:
            stderr.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if report.ok and bounds:
            stdout.print("[bold green]audit passed[/]: every chain verifies, the audit's own "
                         "distributed-DP accountant agrees with the reported epsilon, the "
                         "noise recorded matches the clients' ledgers, no budget exceeded",
                         soft_wrap=True)
        elif report.ok:
            stdout.print("[bold green]audit passed[/]: every chain verifies, both accountants "
                       "agree with the reported epsilon, no budget exceeded")
        for problem in report.problems:
            stderr.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_RUN_FAILED)
