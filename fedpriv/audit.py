"""``fedpriv audit RUN_DIR``: verify every privacy ledger and recompute epsilon.

The audit trusts nothing the run reported: it re-reads each ledger (the federation's,
``RUN_DIR/ledger.sqlite``, and every client's, ``RUN_DIR/clients/*/ledger.sqlite``),
verifies its hash chain (and that its head is the one recorded in ``summary.json``: the
federation's by the server, each client's as the client reported it in its last
reply), recomputes epsilon from the logged events with two independently written
accountants (Google's dp-accounting PLD, the reported figure, and Microsoft's
prv-accountant; RDP is shown beside them) and fails when they disagree by more than
:data:`AGREEMENT` (1 %), recomputes adaptive clipping's combined noise multiplier from
its parts (Andrew et al. 2021, Theorem 1), checks each scope against the budget its
genesis entry fixed, flags a ``reproducible`` (seeded) run, and, for a run with canary
clients, compares the empirical privacy estimate (Andrew et al. 2024) with the claim.

Distributed DP (Skellam or discrete Gaussian shares under secure aggregation) has no PLD
or PRV form. A scope holding such events is accounted as the run does, in Renyi DP
(:mod:`fedpriv.privacy.discrete.rdp`), and recomputed by the audit's own implementation
of the same published bounds (:mod:`fedpriv.privacy.ddp_audit`, which shares no code
with the run's); the two must agree within :data:`AGREEMENT`, and the report names the
mechanism and the theorem used. The noise the federation ledger records is also checked
against what the clients' own ledgers say each of them added, and against the plan in
``summary.json``: a server ledger that claims more noise, or more shares, than the
clients put into the sum fails.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedpriv.audit_signatures import LedgerFacts, check_signatures
from fedpriv.privacy import (
    Accountant,
    GaussianSumEvent,
    LedgerError,
    PrivacyLedger,
    epsilon,
)
from fedpriv.privacy.ddp_audit import BOUNDS, CONVERSION, independent_epsilon
from fedpriv.privacy.events import DistributedNoiseEvent
from fedpriv.privacy.prv import prv_epsilon

__all__ = [
    "ACCOUNTANTS",
    "AGREEMENT",
    "DISTRIBUTED_ACCOUNTANTS",
    "TOLERANCE",
    "AuditReport",
    "ScopeAudit",
    "audit_run",
]

#: Slack for comparing epsilons: PLD is recomputed with the same discretisation, so the
#: figures agree to rounding; a scope is over budget when epsilon > max_epsilon + this.
TOLERANCE = 1e-9

#: Largest relative disagreement allowed between the two independent accountants, and
#: between the reported epsilon and the independent one.
AGREEMENT = 0.01

#: The accountants the audit names in its output.
ACCOUNTANTS = {
    "pld": "dp-accounting PLD (Google; reported by the run)",
    "prv": "prv-accountant PRV (Microsoft; independent recomputation)",
    "rdp": "dp-accounting RDP (looser bound, for reference)",
}

#: Distributed-DP scopes: the run's accountant and the audit's own.
DISTRIBUTED_ACCOUNTANTS = {
    "rdp": "fedpriv.privacy.discrete.rdp (the run's Renyi-DP accountant; reported)",
    "independent": "fedpriv.privacy.ddp_audit (the audit's own implementation of the "
                   "same bounds; " + CONVERSION + ")",
}

#: Relative slack when the noise recorded by the federation and by the clients is compared.
NOISE_MATCH = 1e-9


@dataclass(slots=True, kw_only=True)
class ScopeAudit:
    """One scope (the federation or a client) of one ledger."""

    ledger: str
    scope: str
    chain_ok: bool
    broken_seq: int | None
    reason: str
    #: The run's reported figure: PLD, or for a scope with distributed events its RDP
    #: accountant (``accountant`` says which).
    epsilon_pld: float | None = None
    epsilon_prv: float | None = None
    epsilon_rdp: float | None = None
    delta: float | None = None
    max_epsilon: float | None = None
    rounds: int = 0
    mechanisms: list[str] = field(default_factory=list)
    epsilon_by_round: list[tuple[int, float]] = field(default_factory=list)
    accountant: str = "pld"
    #: Distributed scopes: the audit's own recomputation and the bounds it used.
    epsilon_independent: float | None = None
    bounds: list[str] = field(default_factory=list)

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
    warnings: list[str] = field(default_factory=list)
    empirical: dict[str, Any] | None = None

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
            for key in ("epsilon_pld", "epsilon_prv", "epsilon_rdp", "epsilon_independent"):
                d[key] = _json_float(d[key])
            d["epsilon_by_round"] = [[r, _json_float(e)] for r, e in s.epsilon_by_round]
            scopes.append(d)
        return {"run_dir": self.run_dir, "ok": self.ok, "problems": self.problems,
                "warnings": self.warnings, "accountants": ACCOUNTANTS,
                "reported": self.reported, "empirical": self.empirical, "scopes": scopes}


def _agree(a: float, b: float) -> bool:
    """Within :data:`AGREEMENT` of each other (both infinite counts as agreement)."""
    if math.isinf(a) or math.isinf(b):
        return math.isinf(a) and math.isinf(b)
    return abs(a - b) <= AGREEMENT * max(abs(b), 1e-3)


def _check_theorem1(path: Path, scope: str, events: list[tuple[int, Any]],
                    problems: list[str]) -> None:
    """Recompute adaptive clipping's z from the noise actually added.

    Andrew et al. 2021, Theorem 1: the update noise z_Delta and the centred-count noise
    sigma_b (sensitivity 1/2) make one Gaussian mechanism with
    z = (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2); the ledger's z must not be larger.
    """
    for rnd, ev in events:
        if not isinstance(ev, GaussianSumEvent) or ev.update_noise_multiplier is None:
            continue
        z_delta, sigma_b = ev.update_noise_multiplier, ev.count_stddev or 0.0
        z = 1.0 / math.sqrt(z_delta ** -2 + (2.0 * sigma_b) ** -2) if sigma_b > 0 else 0.0
        if ev.noise_multiplier > z * (1 + 1e-9):
            problems.append(
                f"{path}: {scope}: round {rnd} records z={ev.noise_multiplier:.6g}, but "
                f"its noise (z_Delta={z_delta:.6g}, sigma_b={sigma_b:.6g}) gives only "
                f"z={z:.6g} (Andrew et al. 2021, Theorem 1)")


def _json_float(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def _budget(value: float) -> float | None:
    return None if math.isinf(value) else value


def _audit_ledger(path: Path, expected_head: tuple[int, str] | None,
                  problems: list[str], facts: dict[Path, LedgerFacts]) -> list[ScopeAudit]:
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
        rotations = tuple(ledger.rotations())
        hashes = {e.seq: e.hash for e in ledger.entries()}
        for rot in rotations:
            if hashes.get(rot.prior_seq) != rot.prior_hash:
                problems.append(f"{path}: entry {rot.seq} (resume) endorses a head that is "
                                f"not entry {rot.prior_seq} of this chain")
        facts[path] = LedgerFacts(ledger.run_id, ledger.signer, *ledger.head(),
                                  genesis_signer=ledger.genesis_signer, rotations=rotations,
                                  flags=ledger.flags())
        out = []
        for scope in ledger.scopes() or [ledger.scope]:
            events = ledger.events(scope)
            by_round: list[tuple[int, float]] = []
            for i, (rnd, _) in enumerate(events):
                if i + 1 == len(events) or events[i + 1][0] != rnd:
                    by_round.append((rnd, epsilon([e for _, e in events[: i + 1]], delta)))
            evs = [e for _, e in events]
            _check_theorem1(path, scope, events, problems)
            audit = ScopeAudit(
                ledger=str(path), scope=scope, chain_ok=True, broken_seq=None, reason="",
                delta=delta, max_epsilon=_budget(budget),
                rounds=len({r for r, _ in events}),
                mechanisms=sorted({e.mechanism.value for e in evs}),
                epsilon_by_round=by_round,
            )
            if any(isinstance(e, DistributedNoiseEvent) for e in evs):
                _account_distributed(path, scope, evs, delta, audit, problems)
            else:
                _account_gaussian(path, scope, evs, delta, audit, problems)
            if audit.over_budget:
                first = next(r for r, e in by_round if e > budget + TOLERANCE)
                problems.append(
                    f"{path}: {scope} spent epsilon {audit.epsilon_pld:.4f} > its budget "
                    f"{budget:g} (first exceeded in round {first})")
            out.append(audit)
        return out


def _account_gaussian(path: Path, scope: str, evs: list[Any], delta: float,
                      audit: ScopeAudit, problems: list[str]) -> None:
    """PLD (the run's figure) against PRV (independent); RDP beside them."""
    pld_eps = epsilon(evs, delta, Accountant.PLD)
    prv_eps = prv_epsilon(evs, delta)
    if not _agree(pld_eps, prv_eps):
        problems.append(
            f"{path}: {scope}: the accountants disagree: PLD (dp-accounting) "
            f"{pld_eps:.4f}, PRV (prv-accountant) {prv_eps:.4f}, more than "
            f"{AGREEMENT:.0%} apart")
    audit.epsilon_pld, audit.epsilon_prv = pld_eps, prv_eps
    audit.epsilon_rdp = epsilon(evs, delta, Accountant.RDP)


def _account_distributed(path: Path, scope: str, evs: list[Any], delta: float,
                         audit: ScopeAudit, problems: list[str]) -> None:
    """The run's RDP figure against the audit's own implementation of the bounds."""
    run_eps = epsilon(evs, delta)  # composed in RDP (fedpriv.privacy.discrete.rdp)
    own = independent_epsilon(evs, delta)
    audit.accountant = "rdp"
    audit.epsilon_pld = audit.epsilon_rdp = run_eps
    audit.epsilon_independent = own
    audit.bounds = sorted({BOUNDS[e.mechanism.value] for e in evs
                           if isinstance(e, DistributedNoiseEvent)})
    if not _agree(run_eps, own):
        problems.append(
            f"{path}: {scope}: the run's RDP accountant gives epsilon {run_eps:.4f}, the "
            f"audit's own implementation of {'; '.join(audit.bounds)} gives {own:.4f}, "
            f"more than {AGREEMENT:.0%} apart")


def _noise_fields(ev: DistributedNoiseEvent) -> dict[str, Any]:
    return {"mechanism": ev.mechanism.value, "local_variance": ev.local_variance,
            "l2_sensitivity": ev.l2_sensitivity, "l1_sensitivity": ev.l1_sensitivity,
            "dimension": ev.dimension, "bits": ev.bits}


def _differs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key, x in a.items():
        y = b.get(key)
        same = (x == y if isinstance(x, str) or isinstance(y, str) or y is None
                else math.isclose(float(x), float(y), rel_tol=NOISE_MATCH))
        if not same:
            out.append(f"{key} {x!r} (the clients: {y!r})")
    return out


def _check_distributed_noise(root: Path, summary: dict[str, Any], problems: list[str],
                             warnings: list[str]) -> None:
    """The noise the federation ledger claims against what the clients say they added.

    Each client records, in its own ledger and before anything leaves the device, the
    share it adds (variance V, sensitivities, dimension, bits); the server records each
    round's sum. Every round's federation event must describe the same shares as the
    clients that charged that round, hold no more shares than clients charged it, and
    match the plan in ``summary.json``.
    """
    federation = root / "ledger.sqlite"
    try:
        with PrivacyLedger.open(federation) as led:
            fed = [(r, e) for r, e in led.events() if isinstance(e, DistributedNoiseEvent)]
    except LedgerError:
        return  # already reported by the chain check
    if not fed:
        return
    charged: dict[int, dict[str, DistributedNoiseEvent]] = {}
    for path in sorted((root / "clients").glob("*/ledger.sqlite")):
        try:
            with PrivacyLedger.open(path) as led:
                for rnd, ev in led.events():
                    if isinstance(ev, DistributedNoiseEvent):
                        charged.setdefault(rnd, {})[path.parent.name] = ev
        except LedgerError:
            continue
    planned = summary.get("distributed_dp") if isinstance(summary, dict) else None
    if not charged:
        warnings.append(f"{federation}: no client ledgers in the run directory to check the "
                        "noise the federation ledger claims against (deployed clients keep "
                        "theirs)")
    for rnd, ev in fed:
        mine = _noise_fields(ev)
        clients = charged.get(rnd, {})
        for client, theirs in sorted(clients.items()):
            bad = _differs(mine, _noise_fields(theirs))
            if bad:
                problems.append(f"{federation}: round {rnd} records {', '.join(bad)}: not the "
                                f"noise {client} says it added")
                break
        if charged and ev.clients > len(clients):
            problems.append(f"{federation}: round {rnd} records the shares of {ev.clients} "
                            f"clients, but only {len(clients)} client ledger(s) charged it")
        if isinstance(planned, dict):
            plan = {"mechanism": planned.get("mechanism"),
                    "local_variance": planned.get("local_variance"),
                    "l2_sensitivity": planned.get("l2_sensitivity"),
                    "bits": planned.get("bits")}
            bad = _differs({k: mine[k] for k in plan}, plan)
            if bad:
                said = ", ".join(b.replace("the clients", "summary.json") for b in bad)
                problems.append(f"{federation}: round {rnd} records {said}: not the run's "
                                "distributed-DP plan")


Head = tuple[int, str]


def _read_summary(path: Path, problems: list[str]
                  ) -> tuple[dict[str, Any], dict[str, Any] | None, Head | None,
                             dict[str, Head]]:
    """Read summary.json once: the object, the epsilon, and the ledger heads.

    Returns the whole object ({} if absent or unreadable), the reported epsilon, the
    federation's head and each client's head.
    """
    if not path.is_file():
        return {}, None, None, {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{path} is unreadable or malformed ({err}); no head is checked")
        return {}, None, None, {}
    if not isinstance(summary, dict):
        problems.append(f"{path} is unreadable or malformed (not an object); no head is "
                        "checked")
        return {}, None, None, {}
    try:
        reported = summary.get("epsilon")
        if reported is not None and not isinstance(reported, dict):
            raise ValueError(f"'epsilon' must be an object, got {reported!r}")
        head = None
        if "ledger_head" in summary:
            head = (int(summary["ledger_head"]["seq"]), str(summary["ledger_head"]["hash"]))
        client_heads = {}
        for client, text in summary.get("client_ledger_heads", {}).items():
            seq, _, digest = str(text).partition(":")
            client_heads[str(client)] = (int(seq), digest)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        problems.append(f"{path} is unreadable or malformed ({err}); no head is checked")
        return summary, None, None, {}
    return summary, reported, head, client_heads


def _check_reported(reported: dict[str, Any], federation: Path,
                    scopes: list[ScopeAudit], problems: list[str]) -> None:
    fed = [s for s in scopes if s.ledger == str(federation)]
    recomputed = max((s.epsilon_pld or 0.0 for s in fed), default=0.0)
    independent = max(((s.epsilon_prv if s.epsilon_prv is not None
                        else s.epsilon_independent) or 0.0 for s in fed), default=0.0)
    which = ("independent PRV accountant" if all(s.epsilon_prv is not None for s in fed)
             else "audit's independent distributed-DP accountant")
    claimed = reported.get("federation")
    if claimed is None:
        return
    if abs(recomputed - float(claimed)) > 1e-6 * max(1.0, recomputed):
        problems.append(f"summary.json reports federation epsilon {claimed}, the ledger "
                        f"gives {recomputed}")
    if not _agree(float(claimed), independent):
        problems.append(f"summary.json reports federation epsilon {claimed}, the "
                        f"{which} gives {independent:.4f} (more than "
                        f"{AGREEMENT:.0%} apart)")


def audit_run(run_dir: str | Path, *, server_key: str | None = None,
              roster: str | Path | None = None) -> AuditReport:
    """Audit every ledger of the run in ``run_dir``.

    Parameters
    ----------
    run_dir : path
        A run directory: ``ledger.sqlite`` (the federation's ledger), optionally
        ``clients/<client-id>/ledger.sqlite`` (each client's own), and optionally
        ``summary.json`` with ``"ledger_head": {"seq": n, "hash": "..."}`` (checked as
        the federation ledger's head), ``"client_ledger_heads": {"<id>": "seq:hash"}``
        and ``"epsilon": {"federation": eps}`` (checked against the recomputation).
    server_key : str, optional
        The fingerprint of the run's head-signing key, recorded when the run started.
    roster : path, optional
        The clients' identity roster (default ``RUN_DIR/identities/roster.json``).

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
    summary, reported, head, client_heads = _read_summary(root / "summary.json", problems)
    facts: dict[Path, LedgerFacts] = {}
    federation = root / "ledger.sqlite"
    scopes: list[ScopeAudit] = []
    if federation.is_file():
        scopes += _audit_ledger(federation, head, problems, facts)
    elif head is not None:
        problems.append(f"{federation} is missing, but summary.json records its head")
    for path in sorted((root / "clients").glob("*/ledger.sqlite")):
        scopes += _audit_ledger(path, client_heads.get(path.parent.name), problems, facts)
    for client in summary.get("client_ledgers_in_run_dir") or []:
        path = root / "clients" / str(client) / "ledger.sqlite"
        if not path.is_file():
            problems.append(f"{path} is missing: summary.json says client {client} kept "
                            "its ledger there")
    if not (root / "summary.json").is_file() and (scopes or federation.exists()):
        problems.append(f"{root / 'summary.json'} is missing: the run did not finish (or "
                        "its summary was removed), so no head or epsilon can be checked")
    elif summary.get("status") not in (None, "completed", "stopped"):
        problems.append(f"the run did not finish: summary.json says status "
                        f"{summary.get('status')!r} ({summary.get('reason', '')})")
    if not scopes and not problems:
        problems.append(f"{root} holds no privacy ledger (was the run made with a "
                        "dp-mode?)")
    if reported and federation.is_file() and all(s.chain_ok for s in scopes):
        _check_reported(reported, federation, scopes, problems)
    warnings: list[str] = []
    if all(s.chain_ok for s in scopes):
        check_signatures(root, summary, facts, problems, warnings, server_key,
                         Path(roster) if roster else None)
        if federation.is_file():
            _check_distributed_noise(root, summary, problems, warnings)
    # The federation ledger's genesis and resume entries carry the run's flags under the
    # hash chain and the signed head; summary.json (unsigned) only repeats them.
    flags = (facts[federation].flags if federation in facts
             and all(s.chain_ok for s in scopes) else {})
    if summary.get("reproducible") or flags.get("reproducible"):
        warnings.append("reproducible = true: the server's sampling and noise (and those of "
                        "simulated clients) were seeded from the run's seed; the epsilon "
                        "holds only while that seed is secret")
    scale = flags.get("test_only_noise_scale", summary.get("test_only_noise_scale"))
    if scale is not None:
        problems.append(f"the run had FEDPRIV_TEST_ONLY_NOISE_SCALE={float(scale):g} set: "
                        "the noise actually added was scaled by it, so the ledgers' epsilon "
                        "is not what was spent (a switch for tests only)")
    empirical = None
    if int(summary.get("canaries") or 0) > 0:
        from fedpriv.empirical import estimate_run

        claimed = (reported or {}).get("federation")
        empirical = estimate_run(root, int(summary["canaries"]),
                                 delta=float((reported or {}).get("delta") or 1e-5),
                                 claimed=None if claimed is None else float(claimed),
                                 problems=problems)
    return AuditReport(run_dir=str(root), scopes=scopes, problems=problems,
                       reported=reported, warnings=warnings, empirical=empirical)
