"""Per-round X25519 key pairs and HKDF-SHA256 key agreement for SecAgg+.

Bell, Bonawitz, Gascon, Lepoint & Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (CCS), Section 3 / Algorithm 1 (after Bonawitz et al. 2017,
CCS, Section 4 "KA.gen / KA.agree"): each client makes two fresh key pairs per round,
``c`` (channel: encrypts the share bundles it sends) and ``s`` (masking: pairwise mask
seeds ``s_uv``). A shared key is X25519 followed by HKDF-SHA256 whose ``info`` binds the
round, the unordered pair {u, v} and the purpose, so no key is ever reused across rounds,
pairs or purposes.
"""

from __future__ import annotations

import enum
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpriv.secagg.errors import SecAggError

__all__ = ["KEY_BYTES", "KeyPair", "KeyPurpose", "agree", "agreement_info", "pair_key"]

KEY_BYTES = 32
_MAX_ID = (1 << 63) - 1


class KeyPurpose(enum.Enum):
    """What a derived key is for (bound into HKDF's ``info``)."""

    CHANNEL = b"enc"  # AEAD key for share bundles between u and v
    MASK = b"mask"  # pairwise mask seed s_uv


class KeyPair:
    """An X25519 key pair; ``public`` and ``private`` are 32 raw bytes.

    Parameters
    ----------
    private : bytes, optional
        Raw private key to restore; a fresh key from the OS CSPRNG when omitted.
    """

    __slots__ = ("private", "public")

    def __init__(self, private: bytes | None = None) -> None:
        if private is not None and len(private) != KEY_BYTES:
            raise SecAggError(f"private key must be {KEY_BYTES} bytes, got {len(private)}")
        key = (X25519PrivateKey.from_private_bytes(private) if private is not None
               else X25519PrivateKey.generate())
        self.private: bytes = key.private_bytes(serialization.Encoding.Raw,
                                                serialization.PrivateFormat.Raw,
                                                serialization.NoEncryption())
        self.public: bytes = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)


def agreement_info(round_id: int, u: int, v: int, purpose: KeyPurpose) -> bytes:
    """HKDF ``info``: domain, purpose, round and the unordered pair (min, max)."""
    for name, val in (("round_id", round_id), ("u", u), ("v", v)):
        if not 0 <= val <= _MAX_ID:
            raise SecAggError(f"{name} must be in [0, 2^63), got {val}")
    lo, hi = min(u, v), max(u, v)
    return b"fedpriv-secagg|" + purpose.value + b"|" + struct.pack(">QQQ", round_id, lo, hi)


def agree(private: bytes, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key from X25519(private, peer_public) through HKDF-SHA256 with ``info``.

    Symmetric: ``agree(a.private, b.public, info) == agree(b.private, a.public, info)``.

    Raises
    ------
    SecAggError
        For a public key that is not 32 bytes or is a low-order point.
    """
    if len(peer_public) != KEY_BYTES:
        raise SecAggError(f"public key must be {KEY_BYTES} bytes, got {len(peer_public)}")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as err:  # all-zero shared secret: a malicious low-order key
        raise SecAggError(f"key agreement failed: {err}") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def pair_key(private: bytes, peer_public: bytes, *, round_id: int, u: int, v: int,
             purpose: KeyPurpose) -> bytes:
    """:func:`agree` with the ``info`` of :func:`agreement_info` (round, pair, purpose)."""
    return agree(private, peer_public, agreement_info(round_id, u, v, purpose))
