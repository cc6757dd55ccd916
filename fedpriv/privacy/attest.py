"""Signed ledger heads: a re-hashed forgery cannot carry a valid signature.

A hash chain shows that no entry was changed *after the head was fixed*; someone who
rewrites a ledger and recomputes every hash gets a new, self-consistent chain. So the
party that keeps a ledger signs its head (sequence number and hash) with an Ed25519 key
whose public half was fixed when the run started: the server with a per-run key that
exists only in the server's memory (its public half is in the federation ledger's genesis
entry and in ``RUN_DIR/run-key.pub``), each client with its long-term identity key (the
roster of public keys is held out of band). See docs/threat-model.md for what this does
and does not prove.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = ["HeadSigner", "final_payload", "fingerprint", "head_payload", "verify_final",
           "verify_head"]

_DOMAIN = b"fedpriv/ledger-head/v1\x00"
#: A run's last word: its head *and* how the run ended. A head signature (every
#: checkpoint's, a resume entry's endorsement) says "the ledger reached this head"; only
#: this one says "and the run ended here", so a ledger cut back to an earlier signed head
#: cannot pass for a finished run.
_FINAL_DOMAIN = b"fedpriv/ledger-final/v1\x00"


def head_payload(*, run_id: str, scope: str, seq: int, head_hash: str) -> bytes:
    """The bytes a head signature covers (domain-separated, length-prefixed fields)."""
    return _payload(_DOMAIN, (run_id, scope, head_hash), (seq,))


def final_payload(*, run_id: str, scope: str, seq: int, head_hash: str, status: str,
                  rounds: int) -> bytes:
    """The bytes a run's final signature covers: its head, status and rounds.

    A separate domain from :func:`head_payload`'s.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    return _payload(_FINAL_DOMAIN, (run_id, scope, head_hash, status), (seq, rounds))


def _payload(domain: bytes, texts: tuple[str, ...], numbers: tuple[int, ...]) -> bytes:
    if numbers[0] < 1:
        raise ValueError(f"seq must be >= 1, got {numbers[0]}")
    out = bytearray(domain)
    for text in texts:
        raw = text.encode()
        out += len(raw).to_bytes(4, "big") + raw
    for number in numbers:
        out += number.to_bytes(8, "big")
    return bytes(out)


def fingerprint(public: bytes) -> str:
    """A short, readable fingerprint of a 32-byte Ed25519 public key (SHA-256, 16 hex)."""
    return hashlib.sha256(public).hexdigest()[:16]


class HeadSigner:
    """An Ed25519 key that signs ledger heads (fresh from the OS CSPRNG by default)."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key if key is not None else Ed25519PrivateKey.generate()
        self.public: bytes = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> HeadSigner:
        """From a raw 32-byte Ed25519 private key."""
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def sign(self, *, run_id: str, scope: str, seq: int, head_hash: str) -> str:
        """Hex signature of :func:`head_payload`."""
        return self._key.sign(head_payload(run_id=run_id, scope=scope, seq=seq,
                                           head_hash=head_hash)).hex()


    def sign_final(self, *, run_id: str, scope: str, seq: int, head_hash: str, status: str,
                   rounds: int) -> str:
        """Hex signature of :func:`final_payload` (once, when the run ends)."""
        return self._key.sign(final_payload(run_id=run_id, scope=scope, seq=seq,
                                            head_hash=head_hash, status=status,
                                            rounds=rounds)).hex()


def verify_head(public: bytes, signature_hex: str, *, run_id: str, scope: str, seq: int,
                head_hash: str) -> bool:
    """Whether ``signature_hex`` is ``public``'s signature of that head."""
    return _verify(public, signature_hex,
                   lambda: head_payload(run_id=run_id, scope=scope, seq=seq,
                                        head_hash=head_hash))


def verify_final(public: bytes, signature_hex: str, *, run_id: str, scope: str, seq: int,
                 head_hash: str, status: str, rounds: int) -> bool:
    """Whether ``signature_hex`` is ``public``'s final signature of that head and ending."""
    return _verify(public, signature_hex,
                   lambda: final_payload(run_id=run_id, scope=scope, seq=seq,
                                         head_hash=head_hash, status=status, rounds=rounds))


def _verify(public: bytes, signature_hex: str, payload: Callable[[], bytes]) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(public)
        key.verify(bytes.fromhex(signature_hex), payload())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
