"""A tamper-evident, append-only ledger of DP events in SQLite (a SHA-256 hash chain).

Each entry stores the SHA-256 of the previous entry and its own hash over a canonical
serialisation of every field, so editing, deleting or reordering any committed entry
breaks the chain at that entry. The first entry (``genesis``) records the run, the
scope, delta and the budget, so the budget is covered by the chain too. A truncated tail
is caught by comparing with a head ``(seq, hash)`` kept elsewhere (the run's summary).

Writes are one transaction each with ``synchronous=FULL``: a crash loses no committed
entry and never leaves half an entry. Only the standard library's ``sqlite3``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpriv.privacy.events import DpEvent, event_from_dict

__all__ = ["ChainReport", "LedgerEntry", "LedgerError", "PrivacyLedger", "GENESIS"]

GENESIS = "genesis"
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
        """SHA-256 over the canonical JSON of every field but ``hash``."""
        body = json.dumps(
            [self.seq, self.run_id, self.round, self.scope, self.mechanism, self.params,
             self.created, self.prev_hash],
            separators=(",", ":"), ensure_ascii=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def event(self) -> DpEvent:
        """The DP event of a non-genesis entry."""
        return event_from_dict({**json.loads(self.params), "mechanism": self.mechanism})


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    """The result of :meth:`PrivacyLedger.verify`; ``broken_seq`` names the first bad entry."""

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
               max_epsilon: float) -> PrivacyLedger:
        """A new ledger whose genesis entry records the scope, delta and budget."""
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if not max_epsilon > 0:
            raise ValueError(f"max_epsilon must be > 0, got {max_epsilon!r}")
        path = Path(path)
        if path.exists():
            raise LedgerError(f"{path} exists already; open it instead")
        path.parent.mkdir(parents=True, exist_ok=True)
        ledger = cls(path, cls._connect(path))
        ledger._conn.execute(_SCHEMA)
        ledger._append(run_id=run_id, round_=0, scope=scope, mechanism=GENESIS,
                       params={"delta": delta, "max_epsilon": _budget_text(max_epsilon)})
        return ledger

    @classmethod
    def open(cls, path: str | Path) -> PrivacyLedger:
        """An existing ledger (read and append)."""
        path = Path(path)
        if not path.is_file():
            raise LedgerError(f"no ledger at {path}")
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("SELECT seq, hash FROM entries LIMIT 1")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise LedgerError(f"{path} is not a privacy ledger ({err})") from err
        return cls(path, conn)

    @classmethod
    def open_or_create(cls, path: str | Path, *, run_id: str, scope: str, delta: float,
                       max_epsilon: float) -> PrivacyLedger:
        """Open ``path`` if it exists, else create it."""
        if Path(path).exists():
            return cls.open(path)
        return cls.create(path, run_id=run_id, scope=scope, delta=delta,
                          max_epsilon=max_epsilon)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
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
    def append(self, round_: int, event: DpEvent, *, scope: str | None = None
               ) -> LedgerEntry:
        """Append ``event`` for ``round_``.

        ``scope`` defaults to the genesis entry's; the federation's ledger in record-level
        mode mirrors each client's events under the client's id.
        """
        if round_ < 1:
            raise ValueError(f"round must be >= 1, got {round_}")
        params = event.to_dict()
        mechanism = params.pop("mechanism")
        genesis = self.genesis()
        return self._append(run_id=genesis.run_id, round_=round_,
                            scope=scope or genesis.scope, mechanism=mechanism, params=params)

    def _append(self, *, run_id: str, round_: int, scope: str, mechanism: str,
                params: dict[str, Any]) -> LedgerEntry:
        text = _canonical(params)  # validates before anything is written
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            row = self._conn.execute(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, _ZERO)
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
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return LedgerEntry(**{**_fields(entry), "hash": digest})

    # ------------------------------------------------------------------- read
    def entries(self) -> list[LedgerEntry]:
        """Every entry in sequence order, genesis first."""
        rows = self._conn.execute(
            "SELECT seq, run_id, round, scope, mechanism, params, created, prev_hash, hash "
            "FROM entries ORDER BY seq").fetchall()
        return [LedgerEntry(seq=r[0], run_id=r[1], round=r[2], scope=r[3], mechanism=r[4],
                            params=r[5], created=r[6], prev_hash=r[7], hash=r[8])
                for r in rows]

    def genesis(self) -> LedgerEntry:
        """The first entry (run, scope, delta and budget)."""
        entries = self.entries()
        if not entries or entries[0].mechanism != GENESIS:
            raise LedgerError(f"{self.path} has no genesis entry")
        return entries[0]

    @property
    def delta(self) -> float:
        """The delta the genesis entry fixes for this scope."""
        return float(json.loads(self.genesis().params)["delta"])

    @property
    def max_epsilon(self) -> float:
        """The budget the genesis entry fixes (``inf``: none)."""
        return float(json.loads(self.genesis().params)["max_epsilon"])

    @property
    def scope(self) -> str:
        """The client id or ``federation``."""
        return self.genesis().scope

    def events(self, scope: str | None = None) -> list[tuple[int, DpEvent]]:
        """``(round, event)`` for every non-genesis entry (of ``scope``, if given)."""
        return [(e.round, e.event()) for e in self.entries()
                if e.mechanism != GENESIS and (scope is None or e.scope == scope)]

    def scopes(self) -> list[str]:
        """Every scope with at least one event, in order of first appearance."""
        seen: dict[str, None] = {}
        for e in self.entries():
            if e.mechanism != GENESIS:
                seen.setdefault(e.scope, None)
        return list(seen)

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry: keep it elsewhere to detect truncation."""
        last = self.entries()[-1]
        return last.seq, last.hash

    # ----------------------------------------------------------------- verify
    def verify(self, expected_head: tuple[int, str] | None = None) -> ChainReport:
        """Check every entry's hash and link; optionally that the head is as recorded."""
        entries = self.entries()
        prev = _ZERO
        for i, e in enumerate(entries, start=1):
            if e.seq != i:
                return ChainReport(ok=False, n_entries=len(entries), broken_seq=i,
                                   reason=f"entry {i} is missing (found seq {e.seq} next)")
            if e.prev_hash != prev:
                return ChainReport(ok=False, n_entries=len(entries), broken_seq=e.seq,
                                   reason=f"entry {e.seq} does not link to entry {e.seq - 1}")
            if e.expected_hash() != e.hash:
                return ChainReport(ok=False, n_entries=len(entries), broken_seq=e.seq,
                                   reason=f"entry {e.seq} was modified (hash mismatch)")
            if (i == 1) != (e.mechanism == GENESIS):
                return ChainReport(ok=False, n_entries=len(entries), broken_seq=e.seq,
                                   reason=f"entry {e.seq}: genesis must be first and only")
            if i > 1:
                try:
                    e.event()
                except (ValueError, TypeError) as err:
                    return ChainReport(ok=False, n_entries=len(entries), broken_seq=e.seq,
                                       reason=f"entry {e.seq} is not a valid event: {err}")
            prev = e.hash
        if not entries:
            return ChainReport(ok=False, n_entries=0, broken_seq=1, reason="ledger is empty")
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


def _fields(entry: LedgerEntry) -> dict[str, Any]:
    return {f: getattr(entry, f) for f in LedgerEntry.__slots__}
