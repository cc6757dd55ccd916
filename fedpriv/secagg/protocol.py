"""SecAgg+ for an honest-but-curious server: the stages, and why each exists.

Bell, Bonawitz, Gascon, Lepoint & Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (CCS), Algorithm 1, after Bonawitz et al. 2017, "Practical
Secure Aggregation for Privacy-Preserving Machine Learning" (CCS), Figure 4.

0. ``setup`` (:class:`RoundSetup`, server -> all) - fixes the round id, the cohort, the
   k-regular communication graph, the threshold t, the modulus 2^b and the length d, so
   that every later message can be checked against them.
1. ``advertise`` (:class:`AdvertiseKeys` -> :class:`NeighbourKeys`) - each client makes
   two fresh X25519 key pairs: ``c`` to encrypt the shares it sends, ``s`` to derive the
   pairwise mask seeds s_uv. The server only relays public keys to graph neighbours.
2. ``share`` (:class:`ShareKeys` -> :class:`RoutedShares`) - each client draws a
   self-mask seed b_u and Shamir-shares b_u and s_sk_u t-of-k among its neighbours, each
   bundle AEAD-sealed for its recipient. Shares make dropouts recoverable; encryption
   keeps them from the server, which routes them.
3. ``mask`` (:class:`MaskedInput`) - each client sends y_u = x_u + PRG(b_u) +
   sum_v +-PRG(s_uv) mod 2^b. The pairwise masks cancel in the sum; the self mask
   protects x_u if the server later (wrongly) thinks u dropped and rebuilds its pairwise
   masks - *double masking*.
4. ``unmask`` (:class:`UnmaskRequest` -> :class:`UnmaskShares`) - the server names who
   sent y (survivors) and who did not (dropped); each survivor returns shares of b_v for
   surviving neighbours and of s_sk_v for dropped ones, never both for one v. With >= t
   shares per secret the server removes the survivors' self masks and the dropped
   clients' dangling pairwise masks (:meth:`ServerSecAgg.finish`).

In fedpriv, training happens between stages 2 and 3 (its result is x_u). Every message
carries the round and stage; both state machines reject (:class:`SecAggError`) a message
for another round or stage, a replay, a sender they do not expect, a malformed vector or
a share that fails authentication, and stay usable. Too few clients -> :class:`SecAggAbort`.
"""

from __future__ import annotations

from fedpriv.secagg.client import ClientSecAgg
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    NeighbourKeys,
    RoutedShares,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedpriv.secagg.server import ServerSecAgg
from fedpriv.secagg.setup import RoundSetup, Stage, setup_from_dict, setup_to_dict

__all__ = [
    "AdvertiseKeys",
    "ClientSecAgg",
    "MaskedInput",
    "NeighbourKeys",
    "RoundSetup",
    "RoutedShares",
    "SecAggAbort",
    "SecAggError",
    "ServerSecAgg",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "UnmaskShares",
    "setup_from_dict",
    "setup_to_dict",
]
