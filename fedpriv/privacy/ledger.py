"""A tamper-evident, append-only ledger of DP events in SQLite (a SHA-256 hash chain).

Each entry stores the SHA-256 of the previous entry and its own hash over a canonical
serialisation of every field, so editing, deleting or reordering any committed entry
breaks the chain at that entry. The first entry (``genesis``) records the run, the
scope, delta and the budget, so the budget is covered by the chain too. A truncated tail
is caught by comparing with a head ``(seq, hash)`` kept elsewhere (the run's summary).

Writes are one transaction each (SQLite's default rollback journal, ``BEGIN IMMEDIATE``)
with ``synchronous=FULL``: a crash loses no committed entry and never leaves half an
entry, and an append that fails validation writes nothing. Only the standard library's
``sqlite3``.

Notes
-----
The chain is keyless: whoever can rewrite the file can rewrite *every* hash after an
edit. That forgery, like a truncated tail, is caught only against a head ``(seq, hash)``
recorded elsewhere (``summary.json``'s ``ledger_head``; each client's head travels to the
server in its replies). Row layout (table ``entries``): ``seq`` 1..n, ``run_id``,
``round`` (0 for genesis), ``scope``, ``mechanism`` (``genesis`` or a
:class:`~fedpriv.privacy.events.Mechanism` value), ``params`` (canonical JSON: sorted
keys, ``(",", ":")`` separators; genesis: ``{"delta": d, "max_epsilon": e or "inf"}``),
``created`` (UTC ISO 8601), ``prev_hash`` (64 zeros for genesis) and ``hash`` = SHA-256
of the canonical JSON array of the eight other fields in that order.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpriv.privacy.events import (
    DistributedNoiseEvent,
    DpEvent,
    DpSgdEvent,
    GaussianSumEvent,
    event_from_dict,
)

__all__ = ["GENESIS", "RESUME", "ChainReport", "KeyRotation", "LedgerEntry", "LedgerError",
           "PrivacyLedger"]

GENESIS = "genesis"
#: A run resumed by a new process: the head-signing key changes (not a DP event).
RESUME = "resume"
_ZERO = "0" * 64
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    scope TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    params TEXT NOT NULL,
    created TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""


class LedgerError(RuntimeError):
    """The ledger file is missing, not a ledger, or was asked something impossible."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One row of the ledger, as stored."""

    seq: int
    run_id: str
    round: int
    scope: str
    mechanism: str
    params: str
    created: str
    prev_hash: str
    hash: str

    def expected_hash(self) -> str:
        """SHA-256 (hex) over the canonical JSON array of every field but ``hash``."""
        body = json.dumps(
            [self.seq, self.run_id, self.round, self.scope, self.mechanism, self.params,
             self.created, self.prev_hash],
            separators=(",", ":"), ensure_ascii=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def event(self) -> DpEvent:
        """The DP event of an event entry (neither genesis nor resume)."""
        return event_from_dict({**json.loads(self.params), "mechanism": self.mechanism})

    @property
    def is_event(self) -> bool:
        """Whether this entry records a DP event (not the genesis or a resume marker)."""
        return self.mechanism not in (GENESIS, RESUME)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRotation:
    """A ``resume`` entry: from ``seq`` on, heads are signed by ``signer``.

    The previous key endorsed the hand-over by signing the head ``(prior_seq,
    prior_hash)``, the last head it committed to (its checkpoint); entries between
    ``prior_seq`` and ``seq`` were written by the old process after that signature (a
    round interrupted between its ledger commit and its checkpoint).
    """

    seq: int
    round: int
    signer: bytes
    prior_seq: int
    prior_hash: str
    prior_signature: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    """The result of :meth:`PrivacyLedger.verify`.

    ``broken_seq`` names the first bad entry (for a truncated tail, the first missing
    one) and ``reason`` says what is wrong with it.
    """

    ok: bool
    n_entries: int
    broken_seq: int | None = None
    reason: str = ""


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _budget_text(max_epsilon: float) -> str | float:
    return "inf" if math.isinf(max_epsilon) else float(max_epsilon)


class PrivacyLedger:
    """The DP events of one scope (a client or the federation) of one run.

    Use :meth:`create` for a new ledger and :meth:`open` for an existing one.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: str | Path, *, run_id: str, scope: str, delta: float,
               max_epsilon: float, signer: bytes | None = None,
               multi_run: bool = False, flags: dict[str, Any] | None = None
               ) -> PrivacyLedger:
        """A new ledger whose genesis entry records the scope, delta and budget.

        ``signer``: the 32-byte Ed25519 public key whose signatures of this ledger's head
        an auditor should require (see :mod:`fedpriv.privacy.attest`). ``flags``: facts
        about the run that qualify its epsilon (seeded randomness, a test switch), kept in
        the genesis entry, where the hash chain and the signed head cover them.
        """
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if not max_epsilon > 0:
            raise ValueError(f"max_epsilon must be in (0, inf], got {max_epsilon!r}")
        _check_name("run_id", run_id)
        _check_name("scope", scope)
        path = Path(path)
        if path.exists():
            raise LedgerError(f"{path} exists already; open it instead")
        path.parent.mkdir(parents=True, exist_ok=True)
        ledger = cls(path, cls._connect(path))
        ledger._conn.execute(_SCHEMA)
        params: dict[str, Any] = {"delta": delta, "max_epsilon": _budget_text(max_epsilon)}
        if multi_run:
            params["multi_run"] = True
        if flags:
            params["flags"] = dict(flags)
        if signer is not None:
            if len(signer) != 32:
                raise ValueError(f"signer must be a 32-byte public key, got {len(signer)}")
            params["signer"] = signer.hex()
        ledger._append(run_id=run_id, round_=0, scope=scope, mechanism=GENESIS,
                       params=params)
        return ledger

    @classmethod
    def open(cls, path: str | Path) -> PrivacyLedger:
        """An existing ledger (read and append)."""
        path = Path(path)
        if not path.is_file():
            raise LedgerError(f"no ledger at {path}")
        try:
            conn = cls._connect(path)
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"{path} is not a privacy ledger ({err})") from err
        try:
            conn.execute(
                "SELECT seq, run_id, round, scope, mechanism, params, created, prev_hash, "
                "hash FROM entries LIMIT 1")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise LedgerError(f"{path} is not a privacy ledger ({err})") from err
        return cls(path, conn)

    @classmethod
    def open_or_create(cls, path: str | Path, *, run_id: str, scope: str, delta: float,
                       max_epsilon: float, signer: bytes | None = None,
                       multi_run: bool = False) -> PrivacyLedger:
        """Open ``path`` if it exists, else create it."""
        if Path(path).exists():
            return cls.open(path)
        return cls.create(path, run_id=run_id, scope=scope, delta=delta,
                          max_epsilon=max_epsilon, signer=signer, multi_run=multi_run)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # One connection may be used from a signal-handling thread to write the summary of
        # an interrupted run; sqlite3 serialises access itself.
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ write
    def append(self, round_: int, event: DpEvent, *, scope: str | None = None,
               run_id: str | None = None) -> LedgerEntry:
        """Append ``event`` for ``round_``.

        ``scope`` defaults to the genesis entry's; the federation's ledger in record-level
        mode mirrors each client's events under the client's id. ``run_id`` (a device
        ledger, which spans runs) records the run the event belongs to; a single-run
        ledger refuses any run but its own.
        """
        _check_round(round_)
        genesis = self.genesis()
        row = _event_row(event, genesis.scope if scope is None else scope)
        if run_id is not None:
            _check_name("run_id", run_id)
            multi = bool(json.loads(genesis.params).get("multi_run", False))
            if run_id != genesis.run_id and not multi:
                raise ValueError(f"this ledger belongs to run {genesis.run_id!r}, got "
                                 f"run_id {run_id!r}")
        return self._append_rows(run_id=run_id or genesis.run_id, round_=round_,
                                 rows=[row])[0]

    def append_resume(self, round_: int, *, signer: bytes, prior_head: tuple[int, str],
                      prior_signature: str, flags: dict[str, Any] | None = None
                      ) -> LedgerEntry:
        """Record that a new process continues the run after ``round_`` with a new key.

        ``prior_head`` is the last head the previous key signed (``prior_signature``);
        it must be an entry of this chain. Nothing is charged: a resume is not a release.
        """
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
            raise ValueError(f"round must be an integer >= 0, got {round_!r}")
        if len(signer) != 32:
            raise ValueError(f"signer must be a 32-byte public key, got {len(signer)}")
        seq, digest = int(prior_head[0]), str(prior_head[1])
        known = {e.seq: e.hash for e in self.entries()}
        if known.get(seq) != digest:
            raise ValueError(f"prior_head ({seq}, {digest[:12]}...) is not an entry of "
                             f"{self.path}")
        genesis = self.genesis()
        params: dict[str, Any] = {"signer": signer.hex(), "prior_seq": seq,
                                  "prior_hash": digest,
                                  "prior_signature": str(prior_signature)}
        if flags:  # the new process's own (see create)
            params["flags"] = dict(flags)
        return self._append(run_id=genesis.run_id, round_=round_, scope=genesis.scope,
                            mechanism=RESUME, params=params)

    def append_many(self, round_: int, events: Sequence[tuple[DpEvent, str]]
                    ) -> list[LedgerEntry]:
        """Append several events of one round, each under its scope, in one transaction.

        All or none are committed: the federation's mirror of a round's client events
        (record level) must not be left half written by a crash, or a resumed run that
        finds the round charged would keep a round some clients' charges are missing from.
        """
        _check_round(round_)
        rows = [_event_row(event, scope) for event, scope in events]
        if not rows:
            return []
        return self._append_rows(run_id=self.genesis().run_id, round_=round_, rows=rows)

    def _append(self, *, run_id: str, round_: int, scope: str, mechanism: str,
                params: dict[str, Any]) -> LedgerEntry:
        return self._append_rows(run_id=run_id, round_=round_,
                                 rows=[(scope, mechanism, params)])[0]

    def _append_rows(self, *, run_id: str, round_: int,
                     rows: list[tuple[str, str, dict[str, Any]]]) -> list[LedgerEntry]:
        texts = [_canonical(params) for _, _, params in rows]  # validate before writing
        written = []
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            row = self._conn.execute(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, _ZERO)
            for (scope, mechanism, _), text in zip(rows, texts, strict=True):
                entry = LedgerEntry(
                    seq=seq, run_id=run_id, round=round_, scope=scope, mechanism=mechanism,
                    params=text, created=datetime.now(UTC).isoformat(timespec="microseconds"),
                    prev_hash=prev, hash="",
                )
                digest = entry.expected_hash()
                self._conn.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry.seq, entry.run_id, entry.round, entry.scope, entry.mechanism,
                     entry.params, entry.created, entry.prev_hash, digest),
                )
                written.append(LedgerEntry(**{**_fields(entry), "hash": digest}))
                seq, prev = seq + 1, digest
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return written

    # ------------------------------------------------------------------- read
    def _select(self, tail: str) -> list[LedgerEntry]:
        rows = self._conn.execute(
            "SELECT seq, run_id, round, scope, mechanism, params, created, prev_hash, hash "
            f"FROM entries {tail}").fetchall()
        return [LedgerEntry(seq=r[0], run_id=r[1], round=r[2], scope=r[3], mechanism=r[4],
                            params=r[5], created=r[6], prev_hash=r[7], hash=r[8])
                for r in rows]

    def entries(self) -> list[LedgerEntry]:
        """Every entry in sequence order, genesis first."""
        return self._select("ORDER BY seq")

    def genesis(self) -> LedgerEntry:
        """The first entry (run, scope, delta and budget)."""
        first = self._select("ORDER BY seq LIMIT 1")
        if not first or first[0].mechanism != GENESIS:
            raise LedgerError(f"{self.path} has no genesis entry")
        return first[0]

    @property
    def delta(self) -> float:
        """The delta the genesis entry fixes for this scope."""
        return float(json.loads(self.genesis().params)["delta"])

    @property
    def max_epsilon(self) -> float:
        """The budget the genesis entry fixes (``inf``: none)."""
        return float(json.loads(self.genesis().params)["max_epsilon"])

    def flags(self) -> dict[str, Any]:
        """The run flags the genesis and resume entries record, merged (later wins)."""
        out: dict[str, Any] = {}
        for e in self.entries():
            if e.mechanism in (GENESIS, RESUME):
                out.update(json.loads(e.params).get("flags") or {})
        return out

    @property
    def genesis_signer(self) -> bytes | None:
        """The head-signing public key the genesis entry fixes, if any."""
        text = json.loads(self.genesis().params).get("signer")
        return bytes.fromhex(text) if text else None

    @property
    def signer(self) -> bytes | None:
        """The key that signs the current head: the genesis's, or the last resume's."""
        rotations = self.rotations()
        return rotations[-1].signer if rotations else self.genesis_signer

    def rotations(self) -> list[KeyRotation]:
        """Every ``resume`` entry, in order (see :class:`KeyRotation`)."""
        out = []
        for e in self._select(f"WHERE mechanism = '{RESUME}' ORDER BY seq"):
            p = json.loads(e.params)
            out.append(KeyRotation(seq=e.seq, round=e.round, signer=bytes.fromhex(p["signer"]),
                                   prior_seq=int(p["prior_seq"]),
                                   prior_hash=str(p["prior_hash"]),
                                   prior_signature=str(p["prior_signature"])))
        return out

    @property
    def multi_run(self) -> bool:
        """A device's ledger: its entries may belong to several runs (genesis says so)."""
        return bool(json.loads(self.genesis().params).get("multi_run", False))

    @property
    def run_id(self) -> str:
        """The run id the genesis entry fixes."""
        return self.genesis().run_id

    @property
    def scope(self) -> str:
        """The client id or ``federation``."""
        return self.genesis().scope

    def events(self, scope: str | None = None) -> list[tuple[int, DpEvent]]:
        """``(round, event)`` for every non-genesis entry (of ``scope``, if given)."""
        return [(e.round, e.event()) for e in self.entries()
                if e.is_event and (scope is None or e.scope == scope)]

    def scopes(self) -> list[str]:
        """Every scope with at least one event, in order of first appearance."""
        seen: dict[str, None] = {}
        for e in self.entries():
            if e.is_event:
                seen.setdefault(e.scope, None)
        return list(seen)

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry: keep it elsewhere to detect truncation."""
        last = self._select("ORDER BY seq DESC LIMIT 1")
        if not last:
            raise LedgerError(f"{self.path} is empty")
        return last[0].seq, last[0].hash

    # ----------------------------------------------------------------- verify
    def verify(self, expected_head: tuple[int, str] | None = None) -> ChainReport:
        """Check every entry's hash and link; optionally that the head is as recorded.

        Detects an edited field (hash mismatch), a deleted or reordered entry (a gap in
        ``seq`` or a broken ``prev_hash`` link), an entry of another run, and, given
        ``expected_head = (seq, hash)``, a truncated or rewritten tail.
        """
        try:
            entries = self.entries()
        except sqlite3.DatabaseError as err:
            return ChainReport(ok=False, n_entries=0, broken_seq=1,
                               reason=f"the entries cannot be read ({err})")
        if not entries:
            return ChainReport(ok=False, n_entries=0, broken_seq=1,
                               reason="ledger is empty")
        prev = _ZERO
        multi = bool(json.loads(entries[0].params).get("multi_run", False))
        for i, e in enumerate(entries, start=1):
            problem = _entry_problem(i, e, prev, None if multi else entries[0].run_id)
            if problem is not None:
                return ChainReport(ok=False, n_entries=len(entries), broken_seq=problem[0],
                                   reason=problem[1])
            prev = e.hash
        if expected_head is not None:
            seq, digest = expected_head
            last = entries[-1]
            if (last.seq, last.hash) != (seq, digest):
                return ChainReport(
                    ok=False, n_entries=len(entries), broken_seq=min(last.seq + 1, seq),
                    reason=f"head is entry {last.seq}, but the run recorded entry {seq} "
                    f"({digest[:12]}...) as its last: entries were removed or replaced",
                )
        return ChainReport(ok=True, n_entries=len(entries))


def _entry_problem(i: int, e: LedgerEntry, prev: str, run_id: str | None
                   ) -> tuple[int, str] | None:
    """``(seq, reason)`` if the i-th entry (1-based) breaks the chain, else None."""
    if e.seq != i:
        return i, f"entry {i} is missing (found seq {e.seq} next)"
    if e.prev_hash != prev:
        return e.seq, f"entry {e.seq} does not link to entry {e.seq - 1}"
    if e.expected_hash() != e.hash:
        return e.seq, f"entry {e.seq} was modified (hash mismatch)"
    if run_id is not None and e.run_id != run_id:
        return e.seq, f"entry {e.seq} belongs to run {e.run_id!r}, not {run_id!r}"
    if (i == 1) != (e.mechanism == GENESIS):
        return e.seq, f"entry {e.seq}: genesis must be first and only"
    try:
        if i == 1:
            params = json.loads(e.params)
            delta, budget = float(params["delta"]), float(params["max_epsilon"])
            if not (0 < delta < 1 and budget > 0):
                raise ValueError(f"delta {delta!r} or max_epsilon {budget!r} out of range")
        elif e.mechanism == RESUME:
            params = json.loads(e.params)
            if len(bytes.fromhex(params["signer"])) != 32 or not (
                    1 <= int(params["prior_seq"]) < e.seq):
                raise ValueError("signer or prior_seq out of range")
        else:
            e.event()
    except (ValueError, TypeError, KeyError) as err:
        kind = "genesis" if i == 1 else "resume" if e.mechanism == RESUME else "event"
        return e.seq, f"entry {e.seq} is not a valid {kind}: {err}"
    return None


def _check_round(round_: object) -> None:
    if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 1:
        raise ValueError(f"round must be an integer >= 1, got {round_!r}")


def _event_row(event: DpEvent, scope: str) -> tuple[str, str, dict[str, Any]]:
    """``(scope, mechanism, params)`` of a DP event, checked before anything is written."""
    if not isinstance(event, DpSgdEvent | GaussianSumEvent | DistributedNoiseEvent):
        raise ValueError("event must be a DpSgdEvent, GaussianSumEvent or "
                         f"DistributedNoiseEvent, got {event!r}")
    _check_name("scope", scope)
    params = event.to_dict()
    return scope, params.pop("mechanism"), params


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _fields(entry: LedgerEntry) -> dict[str, Any]:
    return {f: getattr(entry, f) for f in LedgerEntry.__slots__}
