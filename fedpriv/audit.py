"""``fedpriv audit RUN_DIR``: verify every privacy ledger and recompute epsilon.

The audit trusts nothing the run reported: it re-reads each ledger (the federation's,
``RUN_DIR/ledger.sqlite``, and every client's, ``RUN_DIR/clients/*/ledger.sqlite``),
verifies its hash chain (and that its head is the one recorded in ``summary.json``: the
federation's by the server, each client's as the client reported it in its last
reply), recomputes epsilon from the logged events with two
accountants (PLD, the reported figure, and RDP beside it), and checks each scope against
the budget its genesis entry fixed.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from fedpriv.privacy import Accountant, LedgerError, PrivacyLedger, epsilon

__all__ = [
    "TOLERANCE",
    "AuditReport",
    "ScopeAudit",
    "audit_run",
    "render_markdown",
    "render_table",
    "write_report",
]

#: Slack for comparing epsilons: PLD is recomputed with the same discretisation, so the
#: figures agree to rounding; a scope is over budget when epsilon > max_epsilon + this.
TOLERANCE = 1e-9


@dataclass(slots=True, kw_only=True)
class ScopeAudit:
    """One scope (the federation or a client) of one ledger."""

    ledger: str
    scope: str
    chain_ok: bool
    broken_seq: int | None
    reason: str
    epsilon_pld: float | None = None
    epsilon_rdp: float | None = None
    delta: float | None = None
    max_epsilon: float | None = None
    rounds: int = 0
    mechanisms: list[str] = field(default_factory=list)
    epsilon_by_round: list[tuple[int, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The chain verifies and the budget holds."""
        return self.chain_ok and not self.over_budget

    @property
    def over_budget(self) -> bool:
        """PLD epsilon above the scope's budget."""
        return (self.epsilon_pld is not None and self.max_epsilon is not None
                and self.epsilon_pld > self.max_epsilon + TOLERANCE)


@dataclass(slots=True, kw_only=True)
class AuditReport:
    """Everything ``fedpriv audit`` found."""

    run_dir: str
    scopes: list[ScopeAudit]
    problems: list[str]
    reported: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        """Every chain verifies, no budget is exceeded, and the run's figures match."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (``inf`` budgets as ``null``, an infinite epsilon as "inf")."""
        scopes = []
        for s in self.scopes:
            d = asdict(s)
            d["ok"], d["over_budget"] = s.ok, s.over_budget
            for key in ("epsilon_pld", "epsilon_rdp"):
                d[key] = _json_float(d[key])
            d["epsilon_by_round"] = [[r, _json_float(e)] for r, e in s.epsilon_by_round]
            scopes.append(d)
        return {"run_dir": self.run_dir, "ok": self.ok, "problems": self.problems,
                "reported": self.reported, "scopes": scopes}


def _json_float(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def _budget(value: float) -> float | None:
    return None if math.isinf(value) else value


def _audit_ledger(path: Path, expected_head: tuple[int, str] | None,
                  problems: list[str]) -> list[ScopeAudit]:
    try:
        ledger = PrivacyLedger.open(path)
    except LedgerError as err:
        problems.append(str(err))
        return [ScopeAudit(ledger=str(path), scope="?", chain_ok=False, broken_seq=None,
                           reason=str(err))]
    with ledger:
        report = ledger.verify(expected_head)
        if not report.ok:
            problems.append(f"{path}: entry {report.broken_seq}: {report.reason}")
            try:
                scope = ledger.genesis().scope
            except (LedgerError, sqlite3.DatabaseError):
                scope = "?"
            return [ScopeAudit(ledger=str(path), scope=scope, chain_ok=False,
                               broken_seq=report.broken_seq, reason=report.reason)]
        delta, budget = ledger.delta, ledger.max_epsilon
        out = []
        for scope in ledger.scopes() or [ledger.scope]:
            events = ledger.events(scope)
            by_round: list[tuple[int, float]] = []
            for i, (rnd, _) in enumerate(events):
                if i + 1 == len(events) or events[i + 1][0] != rnd:
                    by_round.append((rnd, epsilon([e for _, e in events[: i + 1]], delta)))
            evs = [e for _, e in events]
            audit = ScopeAudit(
                ledger=str(path), scope=scope, chain_ok=True, broken_seq=None, reason="",
                epsilon_pld=epsilon(evs, delta, Accountant.PLD),
                epsilon_rdp=epsilon(evs, delta, Accountant.RDP),
                delta=delta, max_epsilon=_budget(budget),
                rounds=len({r for r, _ in events}),
                mechanisms=sorted({e.mechanism.value for e in evs}),
                epsilon_by_round=by_round,
            )
            if audit.over_budget:
                first = next(r for r, e in by_round if e > budget + TOLERANCE)
                problems.append(
                    f"{path}: {scope} spent epsilon {audit.epsilon_pld:.4f} > its budget "
                    f"{budget:g} (first exceeded in round {first})")
            out.append(audit)
        return out


Head = tuple[int, str]


def _read_summary(path: Path, problems: list[str]
                  ) -> tuple[dict[str, Any] | None, Head | None, dict[str, Head]]:
    """The reported epsilon, the federation's head and each client's, from summary.json."""
    if not path.is_file():
        return None, None, {}
    try:
        summary = json.loads(path.read_text())
        reported = summary.get("epsilon")
        head = None
        if "ledger_head" in summary:
            head = (int(summary["ledger_head"]["seq"]), str(summary["ledger_head"]["hash"]))
        client_heads = {}
        for client, text in summary.get("client_ledger_heads", {}).items():
            seq, _, digest = str(text).partition(":")
            client_heads[str(client)] = (int(seq), digest)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        problems.append(f"{path} is unreadable or malformed ({err}); no head is checked")
        return None, None, {}
    return reported, head, client_heads


def _check_reported(reported: dict[str, Any], federation: Path,
                    scopes: list[ScopeAudit], problems: list[str]) -> None:
    fed = [s.epsilon_pld or 0.0 for s in scopes if s.ledger == str(federation)]
    recomputed = max(fed, default=0.0)
    claimed = reported.get("federation")
    if claimed is None:
        return
    if abs(recomputed - float(claimed)) > 1e-6 * max(1.0, recomputed):
        problems.append(f"summary.json reports federation epsilon {claimed}, the ledger "
                        f"gives {recomputed}")


def audit_run(run_dir: str | Path) -> AuditReport:
    """Audit every ledger of the run in ``run_dir``.

    Parameters
    ----------
    run_dir : path
        A run directory: ``ledger.sqlite`` (the federation's ledger), optionally
        ``clients/<client-id>/ledger.sqlite`` (each client's own), and optionally
        ``summary.json`` with ``"ledger_head": {"seq": n, "hash": "..."}`` (checked as
        the federation ledger's head), ``"client_ledger_heads": {"<id>": "seq:hash"}``
        and ``"epsilon": {"federation": eps}`` (checked against the recomputation).

    Returns
    -------
    AuditReport
        One :class:`ScopeAudit` per scope of each ledger; ``ok`` iff ``problems`` is
        empty (every chain verifies, no budget is exceeded, the reported epsilon
        matches). Nothing is written; see :func:`write_report`.
    """
    root = Path(run_dir)
    problems: list[str] = []
    if not root.is_dir():
        return AuditReport(run_dir=str(root), scopes=[], reported=None,
                           problems=[f"{root} is not a run directory"])
    reported, head, client_heads = _read_summary(root / "summary.json", problems)
    federation = root / "ledger.sqlite"
    scopes: list[ScopeAudit] = []
    if federation.is_file():
        scopes += _audit_ledger(federation, head, problems)
    elif head is not None:
        problems.append(f"{federation} is missing, but summary.json records its head")
    for path in sorted((root / "clients").glob("*/ledger.sqlite")):
        scopes += _audit_ledger(path, client_heads.get(path.parent.name), problems)
    if not scopes and not problems:
        problems.append(f"{root} holds no privacy ledger (was the run made with a "
                        "dp-mode?)")
    if reported and federation.is_file() and all(s.chain_ok for s in scopes):
        _check_reported(reported, federation, scopes, problems)
    return AuditReport(run_dir=str(root), scopes=scopes, problems=problems,
                       reported=reported)


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _markdown_row(s: ScopeAudit) -> str:
    ledger = Path(s.ledger)
    chain = "ok" if s.chain_ok else f"broken at {s.broken_seq}"
    budget = "∞" if s.max_epsilon is None else _fmt(s.max_epsilon, "g")
    if s.over_budget:
        budget += " (exceeded)"
    cells = [f"{ledger.parent.name or '.'}/{ledger.name}", s.scope, chain,
             _fmt(s.epsilon_pld), _fmt(s.epsilon_rdp), _fmt(s.delta, "g"), budget,
             str(s.rounds), ", ".join(s.mechanisms)]
    return "| " + " | ".join(cells) + " |"


def render_markdown(report: AuditReport) -> str:
    """The audit as a Markdown document (a table, then the problems)."""
    lines = [f"# Privacy audit of `{report.run_dir}`", "",
             f"Result: **{'OK' if report.ok else 'FAILED'}**", "",
             "| ledger | scope | chain | ε (PLD) | ε (RDP) | δ | budget | rounds "
             "| mechanism |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [_markdown_row(s) for s in report.scopes]
    if report.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


def render_table(report: AuditReport) -> Table:
    """The audit as a ``rich`` table, one row per scope (for the terminal)."""
    table = Table(title=f"privacy audit: {report.run_dir}")
    for col in ("ledger", "scope", "chain", "ε (PLD)", "ε (RDP)", "δ", "budget",
                "rounds", "mechanism"):
        table.add_column(col)
    for s in report.scopes:
        ledger = Path(s.ledger)
        own = ledger.parent.parent.name == "clients"
        budget = "∞" if s.max_epsilon is None else f"{s.max_epsilon:g}"
        table.add_row(
            f"{ledger.parent.name}/{ledger.name}" if own else ledger.name, s.scope,
            "ok" if s.chain_ok else f"[red]broken at entry {s.broken_seq}[/]",
            _fmt(s.epsilon_pld), _fmt(s.epsilon_rdp), _fmt(s.delta, "g"),
            budget + (" [red]exceeded[/]" if s.over_budget else ""), str(s.rounds),
            ", ".join(s.mechanisms),
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
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in report.scopes:
        if s.epsilon_by_round:
            r, e = zip(*s.epsilon_by_round, strict=True)
            ax.plot(r, e, marker="o", markersize=3, label=s.scope)
    budgets = {s.max_epsilon for s in report.scopes if s.max_epsilon is not None}
    for b in budgets:
        ax.axhline(b, linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("round")
    ax.set_ylabel("ε (PLD)")
    ax.set_title("privacy spent")
    if len(report.scopes) <= 12:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
