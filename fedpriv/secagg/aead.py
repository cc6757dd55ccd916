"""Authenticated encryption of share bundles (ChaCha20-Poly1305, RFC 8439).

Bonawitz et al. 2017 (CCS), Section 4, "AE.enc / AE.dec": the shares u sends v travel
through the server encrypted under the channel key c_uv, so the server routes them but
cannot read them. The associated data binds sender, recipient, round, stage and the
digest of the cohort the sender was shown: a share replayed into another round or stage,
misrouted to another client, or sent under another view of the cohort, fails to open.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedpriv.secagg.errors import SecAggError, ShareAuthenticationError

__all__ = ["aead_decrypt", "aead_encrypt", "associated_data"]

_NONCE = 12
_TAG = 16


def associated_data(sender: int, recipient: int, round_id: int, stage: int,
                    context: bytes = b"") -> bytes:
    """The AEAD associated data: big-endian (sender, recipient, round, stage) + context.

    ``context`` is the cohort digest (:func:`fedpriv.secagg.identity.cohort_digest`).
    """
    try:
        return struct.pack(">QQQB", sender, recipient, round_id, stage) + context
    except struct.error as err:
        raise SecAggError(f"associated data out of range: {err}") from None


def aead_encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 under ``key`` (32 bytes) with a random 96-bit nonce prepended."""
    if len(key) != 32:
        raise SecAggError(f"AEAD key must be 32 bytes, got {len(key)}")
    nonce = os.urandom(_NONCE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def aead_decrypt(key: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """Decrypt and authenticate; a wrong key, tampered bytes or wrong context fail.

    Raises
    ------
    ShareAuthenticationError
        When authentication fails or the ciphertext is too short to hold nonce and tag.
    """
    if len(key) != 32:
        raise SecAggError(f"AEAD key must be 32 bytes, got {len(key)}")
    if len(ciphertext) < _NONCE + _TAG:
        raise ShareAuthenticationError(f"ciphertext too short ({len(ciphertext)} bytes)")
    try:
        return ChaCha20Poly1305(key).decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:],
                                             associated)
    except InvalidTag:
        raise ShareAuthenticationError(
            "share failed authentication (tampered, wrong key, misrouted or replayed "
            "from another round or stage)") from None
