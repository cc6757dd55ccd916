"""SecAgg+ as two state machines, one per client and one for the server. No I/O.

Bell et al. 2020 (CCS), Algorithm 1 (SecAgg+, semi-honest server), after Bonawitz et al.
2017 (CCS), Figure 4. Stages, and why each exists:

1. ``advertise`` - each client makes two fresh X25519 key pairs for the round: ``c`` to
   encrypt the shares it sends, ``s`` to derive pairwise mask seeds. The server only
   relays public keys to graph neighbours.
2. ``share`` - each client draws a self-mask seed ``b_u`` and Shamir-shares ``b_u`` and
   ``s_sk_u`` t-of-k among its neighbours, each share AEAD-encrypted for its recipient.
   Shares make dropouts recoverable; encryption keeps them from the server.
3. ``mask`` - each client sends ``y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^b``. The
   pairwise masks cancel in the sum; the self mask protects ``x_u`` if the server later
   (wrongly) thinks u dropped and recovers its pairwise masks - *double masking*.
4. ``unmask`` - the server names who sent ``y`` (survivors) and who did not (dropped);
   each client returns shares of ``b_v`` for surviving neighbours and of ``s_sk_v`` for
   dropped ones, never both for one ``v``. With >= t shares the server removes the self
   masks of survivors and the dangling pairwise masks of the dropped.

Training happens between stages 2 and 3 (its result is ``x_u``), so a round costs the
client three round trips beyond the usual one. Every message carries the round and stage;
a state machine rejects (:class:`SecAggError`) a message for another round or stage, a
replay, a sender it does not expect, a malformed vector or a share that fails
authentication, and stays usable.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from fedpriv.secagg.crypto import KeyPair, aead_decrypt, aead_encrypt, agree, expand_mask
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.shamir import Share, split

__all__ = ["ClientSecAgg", "RoundSetup", "Stage"]


class Stage:
    """Stage numbers carried by every message."""

    ADVERTISE = 1
    SHARE = 2
    MASK = 3
    UNMASK = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSetup:
    """What the server fixes for a round (public)."""

    round_id: int
    neighbours: dict[int, list[int]]  # the communication graph
    threshold: int  # t
    modulus_bits: int  # b
    length: int  # vector length, counting the weight slots

    def __post_init__(self) -> None:
        if not 1 <= self.modulus_bits <= 64:
            raise ValueError(f"modulus_bits must be in [1, 64], got {self.modulus_bits}")
        k = min((len(v) for v in self.neighbours.values()), default=0)
        if not 1 <= self.threshold <= max(k, 1):
            raise ValueError(f"threshold must be in [1, k={k}], got {self.threshold}")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")


def _ad(sender: int, recipient: int, round_id: int, stage: int) -> bytes:
    return struct.pack(">QQQB", sender, recipient, round_id, stage)


def _info(round_id: int, u: int, v: int, purpose: bytes) -> bytes:
    lo, hi = min(u, v), max(u, v)
    return b"fedpriv-secagg|" + purpose + struct.pack(">QQQ", round_id, lo, hi)


def _pack_shares(b_share: Share, s_share: Share) -> bytes:
    return b"".join(v.to_bytes(66, "big") for v in (*b_share, *s_share))


def _unpack_shares(blob: bytes) -> tuple[Share, Share]:
    if len(blob) != 4 * 66:
        raise SecAggError(f"share bundle must be {4 * 66} bytes, got {len(blob)}")
    v = [int.from_bytes(blob[i * 66:(i + 1) * 66], "big") for i in range(4)]
    return (v[0], v[1]), (v[2], v[3])


def _check(round_id: int, stage: int, expected_round: int, expected_stage: int) -> None:
    if round_id != expected_round:
        raise SecAggError(f"message for round {round_id}, expected round {expected_round}")
    if stage != expected_stage:
        raise SecAggError(f"message for stage {stage}, expected stage {expected_stage}")


@dataclass
class ClientSecAgg:
    """One client's side of one round. Call the stage methods in order."""

    node_id: int
    setup: RoundSetup
    _c: KeyPair = field(default_factory=KeyPair)
    _s: KeyPair = field(default_factory=KeyPair)
    _b: bytes = field(default_factory=lambda: os.urandom(32))
    _stage: int = 0
    _peer_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    _received: dict[int, bytes] = field(default_factory=dict)
    _masked_with: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.node_id not in self.setup.neighbours:
            raise SecAggError(f"node {self.node_id} is not in this round's graph")

    @property
    def neighbours(self) -> list[int]:
        """The neighbours of this client in the graph."""
        return self.setup.neighbours[self.node_id]

    def advertise(self) -> dict[str, bytes]:
        """Stage 1: the public keys (c_pk, s_pk)."""
        if self._stage != 0:
            raise SecAggError("advertise called twice")
        self._stage = Stage.ADVERTISE
        return {"c_pk": self._c.public, "s_pk": self._s.public}

    def share(self, round_id: int, keys: dict[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """Stage 2: given neighbours' (c_pk, s_pk), encrypted shares for each of them."""
        _check(round_id, Stage.SHARE, self.setup.round_id, self._stage + 1)
        unknown = set(keys) - set(self.neighbours)
        if unknown:
            raise SecAggError(f"keys from non-neighbours {sorted(unknown)}")
        if len(keys) < self.setup.threshold:
            raise SecAggAbort(f"only {len(keys)} neighbours advertised keys; "
                              f"threshold is {self.setup.threshold}")
        if any(len(c) != 32 or len(s) != 32 for c, s in keys.values()):
            raise SecAggError("public keys must be 32 bytes")
        self._peer_keys = dict(keys)
        peers = sorted(keys)
        b_shares = split(self._b, self.setup.threshold, len(peers))
        s_shares = split(self._s.private, self.setup.threshold, len(peers))
        out = {}
        for v, bs, ss in zip(peers, b_shares, s_shares, strict=True):
            key = agree(self._c.private, keys[v][0], _info(round_id, self.node_id, v, b"enc"))
            out[v] = aead_encrypt(key, _pack_shares(bs, ss),
                                  _ad(self.node_id, v, round_id, Stage.SHARE))
        self._stage = Stage.SHARE
        return out

    def mask(self, round_id: int, ciphertexts: dict[int, bytes], x: np.ndarray) -> np.ndarray:
        """Stage 3: the masked vector, given the shares addressed to this client and x_u."""
        _check(round_id, Stage.MASK, self.setup.round_id, self._stage + 1)
        bad = set(ciphertexts) - set(self._peer_keys)
        if bad:
            raise SecAggError(f"shares from clients that advertised no keys: {sorted(bad)}")
        x = np.asarray(x)
        if x.shape != (self.setup.length,) or x.dtype != np.uint64:
            raise SecAggError(f"input must be uint64 of shape ({self.setup.length},), got "
                              f"{x.dtype} {x.shape}")
        for v, ct in ciphertexts.items():  # authenticate now: reject forgeries early
            key = agree(self._c.private, self._peer_keys[v][0],
                        _info(round_id, self.node_id, v, b"enc"))
            aead_decrypt(key, ct, _ad(v, self.node_id, round_id, Stage.SHARE))
        self._received = dict(ciphertexts)
        bits, n = self.setup.modulus_bits, self.setup.length
        y = x + expand_mask(self._b, n, bits)  # self mask
        for v in sorted(ciphertexts):  # pairwise masks with neighbours still in the round
            seed = agree(self._s.private, self._peer_keys[v][1],
                         _info(round_id, self.node_id, v, b"mask"))
            m = expand_mask(seed, n, bits)
            y = y + m if self.node_id < v else y - m
        self._masked_with = sorted(ciphertexts)
        self._stage = Stage.MASK
        return y & np.uint64((1 << bits) - 1) if bits < 64 else y

    def unmask(self, round_id: int, survivors: list[int], dropped: list[int]
               ) -> dict[int, tuple[Share, str]]:
        """Stage 4: for each neighbour, its b share (survivor) or s_sk share (dropped)."""
        _check(round_id, Stage.UNMASK, self.setup.round_id, self._stage + 1)
        s_set, d_set = set(survivors), set(dropped)
        if s_set & d_set:
            raise SecAggError(f"clients {sorted(s_set & d_set)} named both survivor and "
                              "dropped: revealing both shares would expose their input")
        if self.node_id not in s_set:
            raise SecAggError("this client is not among the survivors")
        known = set(self._received) | {self.node_id}
        if not (s_set | d_set) <= known | set(self.neighbours):
            raise SecAggError("survivor/dropped lists name clients outside the neighbourhood")
        if len(s_set & (known)) < self.setup.threshold:
            raise SecAggAbort(f"only {len(s_set & known)} surviving neighbours; threshold "
                              f"is {self.setup.threshold}")
        out: dict[int, tuple[Share, str]] = {}
        for v, ct in self._received.items():
            if v not in s_set and v not in d_set:
                continue
            key = agree(self._c.private, self._peer_keys[v][0],
                        _info(round_id, self.node_id, v, b"enc"))
            b_share, s_share = _unpack_shares(
                aead_decrypt(key, ct, _ad(v, self.node_id, round_id, Stage.SHARE)))
            out[v] = (b_share, "b") if v in s_set else (s_share, "s")
        self._stage = Stage.UNMASK
        return out
