"""The audit's signature checks: who signed each ledger's head, and with which key.

A hash chain shows that no entry changed after its head was fixed; the signatures show
who fixed it (:mod:`fedpriv.privacy.attest`, docs/threat-model.md "Signed heads"): the run
key's *final* signature of the federation ledger's head in ``summary.json``, each resume's
endorsement by the key before it, and each client's identity-key signature of its own
ledger's head (reported to the server, or kept beside the ledger when it never was).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from fedpriv.privacy import KeyRotation

__all__ = ["LedgerFacts", "check_signatures"]


class LedgerFacts(NamedTuple):
    """What the signature check needs of a ledger whose chain verified (read once)."""

    run_id: str
    signer: bytes | None
    seq: int
    digest: str
    genesis_signer: bytes | None = None
    rotations: tuple[KeyRotation, ...] = ()
    flags: dict[str, Any] = {}  # the genesis and resume entries' (read, never mutated)


def check_signatures(root: Path, summary: dict[str, Any],
                      facts: dict[Path, LedgerFacts], problems: list[str],
                      warnings: list[str], server_key: str | None,
                      roster_path: Path | None) -> None:
    """Signed heads (fedpriv.privacy.attest): a re-hashed forgery has no valid signature.

    The federation ledger's genesis names the run's head-signing key; summary.json must
    carry its signature of the ledger's actual head, ``run-key.pub`` must be that key,
    and ``server_key`` (a fingerprint recorded at run time) pins it. Each client ledger
    whose genesis names a key must have its head signed by that key, and that key must
    be the client's in the roster (``RUN_DIR/identities/roster.json`` or ``roster_path``).
    """
    from fedpriv.privacy.attest import fingerprint, verify_final, verify_head

    federation = root / "ledger.sqlite"
    if federation in facts:
        fed = facts[federation]
        run_id, signer, seq, digest = fed.run_id, fed.signer, fed.seq, fed.digest
        if signer is None:
            warnings.append(f"{federation}: unsigned (made before signed heads); a fully "
                            "re-hashed forgery of it would not be detected")
        else:
            sig = str(summary.get("ledger_head_signature") or "")
            status, rounds = str(summary.get("status") or ""), summary.get("rounds")
            final = isinstance(rounds, int) and rounds >= 0 and verify_final(
                signer, sig, run_id=run_id, scope="federation", seq=seq, head_hash=digest,
                status=status, rounds=rounds)
            if final:
                pass
            elif verify_head(signer, sig, run_id=run_id, scope="federation", seq=seq,
                             head_hash=digest):
                problems.append(f"{federation}: its head (entry {seq}) is signed only as a "
                                "checkpoint, not as the run's end: the ledger may have been "
                                "cut back to an earlier signed head (or the run was made "
                                "before final signatures)")
            else:
                problems.append(f"{federation}: its head (entry {seq}) carries no valid "
                                "signature of the run's key for summary.json's status "
                                f"{status!r} after {rounds} rounds: the ledger or the "
                                "summary was rewritten")
            _check_rotations(federation, fed, problems, warnings)
            first = fed.genesis_signer or signer
            key_file = root / "run-key.pub"
            try:
                on_disk = bytes.fromhex(key_file.read_text().strip())
            except (OSError, ValueError):
                on_disk = b""
            if on_disk != first:
                problems.append(f"{key_file} is not the key the federation ledger's "
                                "genesis names")
            if server_key and fingerprint(first) != server_key.strip().lower():
                problems.append(f"the federation ledger is signed by key "
                                f"{fingerprint(first)}, not the pinned {server_key}")
            elif not server_key:
                warnings.append(f"server key {fingerprint(first)} is not pinned: pass "
                                "--server-key with the fingerprint `fedpriv simulate` "
                                "printed to rule out a wholesale replacement")
    roster = None
    candidate = roster_path or root / "identities" / "roster.json"
    if candidate.is_file():
        from fedpriv.certs import CertError, load_roster

        try:
            roster = load_roster(candidate)
        except CertError as err:
            problems.append(str(err))
    signatures = summary.get("client_ledger_signatures") or {}
    for path in sorted((root / "clients").glob("*/ledger.sqlite")):
        client = path.parent.name
        if path not in facts:
            continue  # already reported by the chain check
        run_id, signer, seq, digest = facts[path][:4]
        if signer is None:
            continue
        entry = signatures.get(client) or {}
        if not verify_head(signer, str(entry.get("signature") or ""), run_id=run_id,
                           scope=client, seq=seq, head_hash=digest):
            # A client that charged a round and dropped before replying never reported
            # that head; it keeps its own signed head beside its ledger.
            kept = _kept_head(path)
            if kept and verify_head(signer, str(kept.get("signature") or ""),
                                    run_id=run_id, scope=client, seq=seq, head_hash=digest):
                warnings.append(f"{path}: its head (entry {seq}) was not reported to the "
                                "server (the client charged a round and dropped before "
                                "replying); its own signed head file verifies it")
                entry = kept
            else:
                problems.append(f"{path}: its head (entry {seq}) carries no valid signature "
                                f"of {client}'s key: the ledger was rewritten")
        if roster is not None:
            listed = roster.keys.get(int(entry.get("signer", -1)))
            if listed != signer:
                problems.append(f"{path}: the key its genesis names is not {client}'s key "
                                f"in the roster {candidate}")


def _kept_head(path: Path) -> dict[str, Any] | None:
    """The signed head a client keeps beside its ledger (``client.train``), if readable."""
    try:
        kept = json.loads(path.with_name(path.name + ".head.json").read_text())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) else None


def _check_rotations(path: Path, fed: LedgerFacts, problems: list[str],
                     warnings: list[str]) -> None:
    """Each resume's new key must be endorsed by the key before it (see KeyRotation).

    The previous key signed the head ``(prior_seq, prior_hash)`` it had committed to; a
    forger without that key cannot splice a chain of its own behind a resume.
    """
    from fedpriv.privacy.attest import fingerprint, verify_head

    key = fed.genesis_signer
    for rot in fed.rotations:
        if key is None or not verify_head(key, rot.prior_signature, run_id=fed.run_id,
                                          scope="federation", seq=rot.prior_seq,
                                          head_hash=rot.prior_hash):
            problems.append(f"{path}: entry {rot.seq} (resume after round {rot.round}) is "
                            "not endorsed by the previous head-signing key: the chain "
                            "after it is not the run's")
        gap = rot.seq - rot.prior_seq - 1
        warnings.append(
            f"resumed after round {rot.round}: head-signing key {fingerprint(rot.signer)} "
            f"took over at entry {rot.seq}, endorsed by key "
            f"{fingerprint(key) if key else '?'} at entry {rot.prior_seq}"
            + (f"; entries {rot.prior_seq + 1}-{rot.seq - 1} were charged after that "
               "signature, before the stop (kept)" if gap > 0 else ""))
        key = rot.signer
