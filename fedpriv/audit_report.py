"""Rendering a privacy audit: a terminal table, ``audit.md`` and ``audit.png``.

The checks themselves are in :mod:`fedpriv.audit`; this module only presents an
:class:`~fedpriv.audit.AuditReport`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from fedpriv.audit import ACCOUNTANTS, DISTRIBUTED_ACCOUNTANTS, AuditReport, ScopeAudit

__all__ = ["render_markdown", "render_table", "write_report"]


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _markdown_row(s: ScopeAudit) -> str:
    ledger = Path(s.ledger)
    chain = "ok" if s.chain_ok else f"broken at {s.broken_seq}"
    budget = "∞" if s.max_epsilon is None else _fmt(s.max_epsilon, "g")
    if s.over_budget:
        budget += " (exceeded)"
    reported = _fmt(s.epsilon_pld) + (" (RDP)" if s.accountant == "rdp" else "")
    second = (_fmt(s.epsilon_prv) if s.epsilon_independent is None
              else _fmt(s.epsilon_independent) + " (own)")
    cells = [f"{ledger.parent.name or '.'}/{ledger.name}", s.scope, chain,
             reported, second, _fmt(s.epsilon_rdp),
             _fmt(s.delta, "g"), budget,
             str(s.rounds), ", ".join(s.mechanisms)]
    return "| " + " | ".join(cells) + " |"


def render_markdown(report: AuditReport) -> str:
    """The audit as a Markdown document (a table, then the problems)."""
    lines = [f"# Privacy audit of `{report.run_dir}`", "",
             f"Result: **{'OK' if report.ok else 'FAILED'}**", "",
             "| ledger | scope | chain | ε (PLD) | ε (PRV) | ε (RDP) | δ | budget | rounds "
             "| mechanism |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_markdown_row(s) for s in report.scopes]
    lines += ["", "Accountants: " + "; ".join(f"{k.upper()}: {v}"
                                             for k, v in ACCOUNTANTS.items())]
    bounds = sorted({b for s in report.scopes for b in s.bounds})
    if bounds:
        lines += ["", "Distributed DP (no PLD/PRV form): the reported ε is the run's RDP, the "
                      "second column the audit's own recomputation. " + "; ".join(
                          f"{k}: {v}" for k, v in DISTRIBUTED_ACCOUNTANTS.items()),
                  "", "Bounds used: " + "; ".join(bounds)]
    if report.empirical:
        e = report.empirical
        lines += ["", f"Empirical privacy estimate ({e['method']}, {e['canaries']} "
                      f"canaries): ε ≈ {e['epsilon']:.3f} against the claimed "
                      f"{_fmt(e['claimed'], '.3f')}"]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    if report.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


def render_table(report: AuditReport) -> Table:
    """The audit as a ``rich`` table, one row per scope, narrow enough for 80 columns.

    δ is shown once in the title; RDP and the mechanisms are in ``audit.md``.
    """
    deltas = sorted({s.delta for s in report.scopes if s.delta is not None})
    delta = ", ".join(f"{d:g}" for d in deltas) or "-"
    table = Table(title=f"privacy audit (δ = {delta})")
    distributed = any(s.accountant == "rdp" for s in report.scopes)
    columns = ("ε RDP", "ε own") if distributed else ("ε PLD", "ε PRV")
    for col in ("ledger", "scope", "chain", *columns, "budget", "rounds"):
        table.add_column(col, overflow="fold")
    for s in report.scopes:
        own = Path(s.ledger).parent.parent.name == "clients"
        budget = "∞" if s.max_epsilon is None else f"{s.max_epsilon:g}"
        table.add_row(
            "client's" if own else "server", s.scope,
            "ok" if s.chain_ok else f"[red]broken at {s.broken_seq}[/]",
            _fmt(s.epsilon_pld),
            _fmt(s.epsilon_independent if s.epsilon_independent is not None
                 else s.epsilon_prv),
            budget + (" [red]exceeded[/]" if s.over_budget else ""), str(s.rounds),
        )
    return table


def write_report(report: AuditReport, run_dir: str | Path) -> list[Path]:
    """Write ``audit.json``, ``audit.md`` and ``audit.png`` (epsilon against round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(run_dir)
    paths = [root / "audit.json", root / "audit.md", root / "audit.png"]
    paths[0].write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
    paths[1].write_text(render_markdown(report))
    _plot(report, paths[2], plt)
    return paths


#: Okabe & Ito's colour-blind-safe palette (black first, for the federation).
_PALETTE = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
            "#CC79A7"]


def _plot(report: AuditReport, path: Path, plt: Any) -> None:
    """Epsilon against round: the federation, the clients, and labelled budget lines."""
    fed = [s for s in report.scopes if s.scope == "federation" and s.epsilon_by_round]
    own = [s for s in report.scopes if Path(s.ledger).parent.parent.name == "clients"]
    clients = [s for s in (own or [s for s in report.scopes if s.scope != "federation"])
               if s.epsilon_by_round]
    delta = next((s.delta for s in report.scopes if s.delta is not None), None)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in fed:
        r, e = zip(*s.epsilon_by_round, strict=True)
        ax.plot(r, e, color=_PALETTE[0], linewidth=2.2, marker="o", markersize=3,
                label="federation (server ledger)")
    if 0 < len(clients) <= len(_PALETTE) - 1:
        for colour, s in zip(_PALETTE[1:], sorted(clients, key=lambda c: c.scope),
                             strict=False):
            r, e = zip(*s.epsilon_by_round, strict=True)
            ax.plot(r, e, color=colour, linewidth=1.2, marker=".", label=s.scope)
    elif clients:
        rounds = sorted({r for s in clients for r, _ in s.epsilon_by_round})
        top, low = [], []
        for rnd in rounds:
            values = [max((e for r, e in s.epsilon_by_round if r <= rnd), default=0.0)
                      for s in clients]
            top.append(max(values))
            low.append(min(values))
        ax.fill_between(rounds, low, top, color=_PALETTE[2], alpha=0.3,
                        label=f"{len(clients)} clients (min to max)")
        ax.plot(rounds, top, color=_PALETTE[5], linewidth=1.2,
                label="clients (max)" if fed else "clients (max) = federation ε")
    budgets: dict[float, set[str]] = {}
    for s in report.scopes:
        if s.max_epsilon is not None:
            kind = "federation" if s.scope == "federation" else "client"
            budgets.setdefault(s.max_epsilon, set()).add(kind)
    for value, kinds in sorted(budgets.items()):
        ax.axhline(value, linestyle="--", color=_PALETTE[6], linewidth=1)
        ax.annotate(f"{' & '.join(sorted(kinds))} budget ε = {value:g}", xy=(1.0, value),
                    xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", fontsize="small",
                    color=_PALETTE[6])
    ax.set_xlabel("round")
    ax.set_ylabel(f"cumulative ε (PLD, δ = {delta:g})" if delta else "cumulative ε (PLD)")
    ax.set_title("privacy spent per round" + ("" if report.ok else " (audit FAILED)"))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
