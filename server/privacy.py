"""The federation's privacy bookkeeping: its ledger, its epsilon and its budget.

User-level DP: one event per round for the federation scope, the Poisson-sampled
Gaussian sum with rate q = m / N: each eligible client is included independently with
probability q by :class:`server.sampling.CohortSampler` from secret randomness, which is
exactly the ``PoissonSampled(q, Gaussian(z))`` event accounted (McMahan et al. 2018,
Algorithm 1). With adaptive clipping z is the combined multiplier of Andrew et al. 2021,
Theorem 1, and the event records its parts.
Record-level DP: every client's own DP-SGD event is mirrored under the client's id; the
federation's record-level epsilon is the largest client's, since clients hold disjoint
data (parallel composition).
Distributed DP: one event per round for the federation scope, the noise of the shares
of the n survivors actually summed (:class:`DistributedNoiseEvent`, accounted in RDP),
with q = 1: amplification by sampling does not hold against the server that chose the
cohort, and that server is who this epsilon is against. Before a round the budget is
checked against the fewest survivors the noise is sized for (the worst case).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedpriv.config import DpMode, RunConfig
from fedpriv.ddp_plan import DistributedPlan
from fedpriv.dp_plan import central_record_event
from fedpriv.privacy import (
    DpEvent,
    GaussianSumEvent,
    PrivacyLedger,
    epsilon,
    event_from_dict,
)
from fedpriv.privacy.attest import HeadSigner, fingerprint

__all__ = ["BudgetExhausted", "FEDERATION", "FederationPrivacy"]

FEDERATION = "federation"


def run_flags(cfg: RunConfig) -> dict[str, Any]:
    """What qualifies this process's epsilon, for the federation ledger's signed chain.

    ``reproducible``: the server's sampling and noise are seeded from the run's seed;
    ``test_only_noise_scale``: the tests' switch scaled the noise actually added, so the
    ledgers' epsilon was not spent (``fedpriv audit`` fails such a run). Kept in the
    genesis (and each resume) entry, where the hash chain and the signed head cover them:
    unlike ``summary.json``, nobody can drop them without breaking a signature.
    """
    from strategies.dp_fedavg import test_only_noise_scale

    flags: dict[str, Any] = {}
    if cfg.training.reproducible:
        flags["reproducible"] = True
    scale = test_only_noise_scale()
    if scale != 1.0:
        flags["test_only_noise_scale"] = scale
    return flags


class BudgetExhausted(RuntimeError):
    """The next round would take the federation past ``max-epsilon``."""


class FederationPrivacy:
    """The server's ledger at ``RUN_DIR/ledger.sqlite`` and the accounting over it."""

    LEDGER = "ledger.sqlite"

    KEY = "run-key.pub"

    def __init__(self, cfg: RunConfig, run_path: Path, run_id: str, *,
                 resume_from: dict[str, Any] | None = None,
                 distributed: DistributedPlan | None = None) -> None:
        """Create the run's ledger, or (``resume_from``) continue an existing one.

        ``resume_from`` is the last checkpoint's ``{"round", "ledger_head",
        "signature"}``: the ledger gets a ``resume`` entry naming this process's new key,
        endorsed by the previous key's signature of that head. ``distributed`` is the
        distributed-DP plan (``dp-mode = distributed``).
        """
        if cfg.privacy.dp_mode is DpMode.DISTRIBUTED and distributed is None:
            raise ValueError("dp-mode=distributed needs its plan (distributed=...)")
        self.cfg = cfg
        self.distributed = distributed
        # The head-signing key lives only in this process: once the run ends nobody,
        # the operator included, can sign a different head for this ledger.
        self.signer = HeadSigner()
        path = run_path / self.LEDGER
        if resume_from is None:
            self.ledger = PrivacyLedger.create(
                path, run_id=run_id, scope=FEDERATION, delta=cfg.privacy.delta,
                max_epsilon=cfg.privacy.max_epsilon, signer=self.signer.public,
                flags=run_flags(cfg),
            )
            (run_path / self.KEY).write_text(self.signer.public.hex() + "\n")
        else:
            self.ledger = PrivacyLedger.open(path)
            head = resume_from["ledger_head"]
            self.ledger.append_resume(int(resume_from["round"]), signer=self.signer.public,
                                      prior_head=(int(head["seq"]), str(head["hash"])),
                                      prior_signature=str(resume_from["signature"]),
                                      flags=run_flags(cfg))
        self.excluded: dict[int, str] = {}  # node id -> reason (client budget)

    def signed_head(self) -> dict[str, Any]:
        """The ledger's head and this process's signature of it (kept per checkpoint)."""
        seq, digest = self.ledger.head()
        return {"ledger_head": {"seq": seq, "hash": digest},
                "signature": self.signer.sign(run_id=self.ledger.run_id, scope=FEDERATION,
                                              seq=seq, head_hash=digest)}

    def last_round(self) -> int:
        """The last round the ledger charged (0: none)."""
        return max((rnd for rnd, _ in self.ledger.events()), default=0)

    # --------------------------------------------------------------- accounting
    def scope_epsilons(self, extra: dict[str, DpEvent] | None = None) -> dict[str, float]:
        """PLD epsilon per scope, optionally with one more event per scope."""
        extra = extra or {}
        scopes = set(self.ledger.scopes()) | set(extra)
        out = {}
        for scope in sorted(scopes):
            events = [ev for _, ev in self.ledger.events(scope)]
            if scope in extra:
                events.append(extra[scope])
            out[scope] = epsilon(events, self.cfg.privacy.delta)
        return out

    def federation_epsilon(self, extra: dict[str, DpEvent] | None = None) -> float:
        """User level: the federation scope's epsilon; record level: the largest client's."""
        eps = self.scope_epsilons(extra)
        return max(eps.values(), default=0.0)

    # ------------------------------------------------------------------ budget
    def next_user_event(self, *, sampling_rate: float, clip: float) -> GaussianSumEvent:
        """The event the coming user-level round will be (z and q are fixed for the run)."""
        return GaussianSumEvent(noise_multiplier=self.cfg.privacy.noise_multiplier,
                                sampling_rate=sampling_rate, clip=clip)

    def check_budget(self, server_round: int, *, sampling_rate: float, clip: float) -> None:
        """Raise :class:`BudgetExhausted` when the next round would exceed max-epsilon.

        User level: the federation's spent events plus the coming round's. Record level:
        each client's last round again, its worst case (each client also checks its own
        next round, round 1 included, against the same budget before it trains).
        """
        if math.isinf(self.cfg.privacy.max_epsilon):
            return
        if self.cfg.privacy.dp_mode is DpMode.USER:
            extra: dict[str, DpEvent] = {
                FEDERATION: self.next_user_event(sampling_rate=sampling_rate, clip=clip)
            }
        elif self.cfg.privacy.dp_mode is DpMode.RECORD_CENTRAL:
            extra = {FEDERATION: central_record_event(self.cfg)}
        elif self.distributed is not None:  # the fewest survivors: the least noise
            extra = {FEDERATION: self.distributed.event(self.distributed.min_clients)}
        else:
            extra = {}
            for scope in self.ledger.scopes():
                events = self.ledger.events(scope)
                if events:
                    extra[scope] = events[-1][1]
        spent = self.federation_epsilon()
        projected = self.federation_epsilon(extra)
        if projected > self.cfg.privacy.max_epsilon:
            raise BudgetExhausted(
                f"round {server_round} would raise the federation's epsilon from "
                f"{spent:.3f} to {projected:.3f} > max-epsilon {self.cfg.privacy.max_epsilon:g} "
                f"(delta {self.cfg.privacy.delta:g})"
            )

    # ------------------------------------------------------------------ record
    def record_user_round(self, server_round: int, event: DpEvent) -> None:
        """Append the round's federation event (user level, record-central, distributed)."""
        self.ledger.append(server_round, event)

    def record_client_events(self, server_round: int, reports: list[dict[str, Any]]) -> None:
        """Mirror the DP-SGD events clients report (record level), in one transaction.

        All of a round's mirrors or none: a resumed run keeps a round whose charges it
        finds in this ledger, so a crash must not leave some clients' charges out.
        """
        self.ledger.append_many(server_round, [
            (event_from_dict(json.loads(str(rep["event"]))), str(rep["client-id"]))
            for rep in reports if rep.get("event")])

    def summary(self, *, status: str, rounds: int) -> dict[str, Any]:
        """``epsilon`` and ``ledger_head`` entries for summary.json.

        The head is signed as the run's end (:meth:`HeadSigner.sign_final`: head, status
        and rounds, a domain no checkpoint signature shares), so that a ledger cut back to
        an earlier checkpoint's signed head cannot pass for the finished run.
        """
        eps = self.scope_epsilons()
        clients = {k: v for k, v in eps.items() if k != FEDERATION}
        seq, digest = self.ledger.head()
        signature = self.signer.sign_final(run_id=self.ledger.run_id, scope=FEDERATION,
                                           seq=seq, head_hash=digest, status=status,
                                           rounds=rounds)
        return {
            "ledger_head_signature": signature,
            # the key to pin is the run's first (the genesis names it; a resumed run's
            # later keys are endorsed by it): `fedpriv audit --server-key` checks that one
            "server_key_fingerprint": fingerprint(self.ledger.genesis_signer
                                                  or self.signer.public),
            "current_key_fingerprint": fingerprint(self.signer.public),
            "epsilon": {
                "federation": self.federation_epsilon(),
                "clients_max": max(clients.values(), default=None),
                "delta": self.cfg.privacy.delta,
                "max_epsilon": (None if math.isinf(self.cfg.privacy.max_epsilon)
                                else self.cfg.privacy.max_epsilon),
                "accountant": "rdp" if self.distributed is not None else "pld",
            },
            "ledger_head": {"seq": seq, "hash": digest},
        }

    @property
    def excluded_ids(self) -> list[str]:
        """Node ids (as text) of clients that refused for lack of budget."""
        return [str(n) for n in self.excluded]

    def close(self) -> None:
        """Close the ledger."""
        self.ledger.close()
