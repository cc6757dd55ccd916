"""A live terminal display of a simulation: a progress bar, one line per round, a summary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["RichReporter", "summary_table"]


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


class RichReporter:
    """Shows progress with rich; safe to call from the ServerApp's thread."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress: Progress | None = None
        self._task: Any = None

    def on_start(self, *, scenario: str, rounds: int, run_dir: str) -> None:
        """Start the progress bar."""
        self.console.print(f"[bold]fedpriv[/] scenario [cyan]{scenario}[/] → {run_dir}")
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("rounds (Ray starting)", total=rounds)
        self._progress.start()

    def on_round(self, record: Mapping[str, Any]) -> None:
        """Print the round's line and advance the bar."""
        line = (
            f"round {record['round']:>3}  train loss {_fmt(record.get('train_loss'))}  "
            f"test acc {_fmt(record['test_accuracy'])}  "
            + (f"test ppl {_fmt(record['test_perplexity'], '.2f')}  "
               if "test_perplexity" in record else "")
            + (f"test rmse {_fmt(record['test_rmse'], '.4f')}  "
               if "test_rmse" in record else "")
            + f"clients {record.get('replies', '-')}/{record.get('cohort', '-')}  "
            f"{record['elapsed_seconds']:6.1f}s"
        )
        sa = record.get("secagg")
        if sa:
            line += (f"  secagg {sa.get('survivors', '-')}/{sa.get('cohort', '-')}"
                     f" t={sa.get('threshold', '-')}")
            if sa.get("dropped"):
                line += f" recovered {sa['dropped']}"
            if sa.get("aborted"):
                line += " ABANDONED"
        if "epsilon" in record:
            line += f"  ε {_fmt(record['epsilon'], '.3f')}"
            if record.get("clip") is not None:
                line += f" C {_fmt(record['clip'], '.2f')}"
            if record.get("refused"):
                line += f"  refused: {', '.join(record['refused'])}"
        if self._progress is None:
            self.console.print(line)
            return
        self._progress.console.print(line)
        self._progress.update(self._task, advance=1, description="rounds")

    def on_finish(self, summary: Mapping[str, Any]) -> None:
        """Stop the bar (the CLI prints the summary table)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(summary: Mapping[str, Any]) -> Table:
    """The final summary of a run as a two-column table."""
    table = Table(title="run summary", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [
        ("scenario", summary.get("scenario")),
        ("status", summary.get("status") + (f" ({summary['reason']})"
                                             if summary.get("reason") else "")),
        ("rounds", f"{summary.get('rounds')}/{summary.get('rounds_planned')}"),
        ("clients", f"{summary.get('clients_per_round')} of {summary.get('clients')} per round"),
        ("task", f"{summary.get('dataset')} / {summary.get('model')} / "
                 f"{summary.get('partition')} / {summary.get('strategy')}"),
        ("initial accuracy", _fmt(summary.get("initial_accuracy"))),
        *_privacy_rows(summary),
        *_secagg_rows(summary),
        ("final accuracy", _fmt(summary.get("final_accuracy"))),
        *[(f"{when} perplexity", _fmt(summary[f"{when}_perplexity"], ".2f"))
          for when in ("initial", "final") if f"{when}_perplexity" in summary],
        *[(f"{when} RMSE", _fmt(summary[f"{when}_rmse"], ".4f"))
          for when in ("initial", "final") if f"{when}_rmse" in summary],
        ("wall time", f"{_fmt(summary.get('wall_seconds'), '.1f')} s"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def _privacy_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    eps = summary.get("epsilon")
    if not eps:
        return []
    budget = eps.get("max_epsilon")
    accountant = str(eps.get("accountant") or "pld").upper()
    rows = [
        ("privacy", f"dp-mode {summary.get('dp_mode')}, delta {eps['delta']:g}"),
        (f"ε federation ({accountant})", _fmt(eps.get("federation"), ".3f")
         + (f" of budget {budget:g}" if budget is not None else "")),
        ("ε clients (max)", _fmt(eps.get("clients_max"), ".3f")),
    ]
    ddp = summary.get("distributed_dp")
    if isinstance(ddp, Mapping):
        rows.append(("distributed DP",
                     f"{ddp.get('mechanism')}, {ddp.get('bits')} bits, gamma "
                     f"{_fmt(ddp.get('scale_gamma'), '.4g')}, V "
                     f"{_fmt(ddp.get('local_variance'), '.4g')} per client, sized for "
                     f"{ddp.get('min_survivors')} survivors, wrap-around <= "
                     f"{_fmt(ddp.get('wrap_probability'), '.1e')} per round"))
    if summary.get("refused_clients"):
        rows.append(("refused (budget)", f"{len(summary['refused_clients'])} client(s)"))
    return rows


def _secagg_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    sa = summary.get("secagg")
    if not sa:
        return []
    recovered = sum(sa.get("dropouts_recovered", []))
    return [("secure aggregation",
             f"SecAgg+ on, cohort {sa.get('cohort')}, k {sa.get('degree')}, "
             f"t {sa.get('threshold')}, {recovered} dropout(s) recovered, "
             f"{sa.get('rounds_abandoned')} round(s) abandoned")]
