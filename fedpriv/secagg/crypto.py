"""Cryptographic building blocks of SecAgg+: key agreement, AEAD, the mask PRG.

Bell, Bonawitz, Gascon, Lepoint & Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (CCS), Section 3: per-round X25519 key pairs, shared keys by
Diffie-Hellman agreement (here X25519 followed by HKDF-SHA256 whose ``info`` binds the
round, the pair and the purpose), authenticated encryption of the secret shares
(ChaCha20-Poly1305 with the sender, recipient, round and stage as associated data), and
masks expanded from the *full* 256-bit shared seed with a ChaCha20 keystream (Flower's
implementation seeds numpy's RandomState with 32 bits of it).
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpriv.secagg.errors import SecAggError

__all__ = [
    "KeyPair",
    "aead_decrypt",
    "aead_encrypt",
    "agree",
    "expand_mask",
]

_NONCE = 12


class KeyPair:
    """An X25519 key pair; ``public`` and ``private`` are 32 raw bytes."""

    def __init__(self, private: bytes | None = None) -> None:
        key = (X25519PrivateKey.from_private_bytes(private) if private is not None
               else X25519PrivateKey.generate())
        self._key = key
        self.private = key.private_bytes(serialization.Encoding.Raw,
                                         serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        self.public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)


def agree(private: bytes, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key from X25519(private, peer_public) through HKDF-SHA256 with ``info``.

    Symmetric: ``agree(a.private, b.public, info) == agree(b.private, a.public, info)``.

    Raises
    ------
    SecAggError
        For a public key that is not 32 bytes or is a low-order point.
    """
    if len(peer_public) != 32:
        raise SecAggError(f"public key must be 32 bytes, got {len(peer_public)}")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as err:  # all-zero shared secret: a malicious low-order key
        raise SecAggError(f"key agreement failed: {err}") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def aead_encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 with a random 96-bit nonce prepended."""
    nonce = os.urandom(_NONCE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def aead_decrypt(key: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """Decrypt and authenticate; a wrong key, tampered bytes or wrong context fail.

    Raises
    ------
    SecAggError
        When authentication fails.
    """
    if len(ciphertext) < _NONCE + 16:
        raise SecAggError(f"ciphertext too short ({len(ciphertext)} bytes)")
    try:
        return ChaCha20Poly1305(key).decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:],
                                             associated)
    except InvalidTag:
        raise SecAggError("share failed authentication (tampered, misrouted or "
                          "replayed from another round or stage)") from None


def expand_mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """``length`` uniform integers mod 2^bits from a ChaCha20 keystream keyed by ``seed``.

    The 256-bit seed is the key; the nonce is fixed (each seed is used for one mask).
    Returns uint64; with ``bits < 64`` the words are reduced mod 2^bits (uniform since
    2^bits divides 2^64).
    """
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], got {bits}")
    enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(enc.update(bytes(8 * length)), dtype=np.uint64).copy()  # (length,)
    if bits < 64:
        words &= np.uint64((1 << bits) - 1)
    return words
