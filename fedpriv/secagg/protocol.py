"""SecAgg+ against a malicious server: the stages, and why each exists.

Bell, Bonawitz, Gascon, Lepoint & Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (CCS), Algorithm 1, with the active-adversary version of
Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
Learning" (CCS), Section 4 and Figure 4 (signed advertisements, ConsistencyCheck).

0. *enrolment* (out of band, once) - every client has a long-term Ed25519 identity; every
   client holds the roster of identity keys (:mod:`fedpriv.secagg.identity`).
1. ``advertise`` (:class:`AdvertiseKeys` -> :class:`NeighbourKeys`) - each client makes
   two fresh X25519 key pairs: ``c`` to encrypt the shares it sends, ``s`` to derive the
   pairwise mask seeds s_uv, and signs (run, round, id, c_pk, s_pk). The server relays
   the cohort and the signed keys; each client derives the graph, t, T and the minimum
   survivors itself (:func:`~fedpriv.secagg.params.derive_setup`) and checks every
   neighbour's signature against the roster.
2. ``share`` (:class:`ShareKeys` -> :class:`RoutedShares`) - each client draws a
   self-mask seed b_u and Shamir-shares b_u and s_sk_u t-of-k among its neighbours, each
   bundle AEAD-sealed for its recipient.
3. ``mask`` (:class:`MaskedInput`) - each client sends y_u = x_u + PRG(b_u) +
   sum_v +-PRG(s_uv) mod 2^b (double masking).
4. ``consistency`` (:class:`ConsistencyRequest` -> :class:`ConsistencySignature`) - the
   server names the survivor set S; each client checks it (in the cohort, holds the
   client, at least the minimum survivors in every component of the graph restricted
   to S) and signs (run, round, S), once.
5. ``unmask`` (:class:`UnmaskRequest` -> :class:`UnmaskShares`) - the server returns S
   with the signatures it collected; a client that sees T valid signatures of the very
   S it signed reveals, for each neighbour v that shared with it, b_v's share if v is
   in S and s_sk_v's if not. Since T > (n + c) / 2, at most one S can be revealed
   against in a round, so no client's b and s_sk are both rebuilt.

In fedpriv, training happens between stages 2 and 3 (its result is x_u). Every message
carries the round and stage; both state machines reject (:class:`SecAggError`) a message
for another round or stage, a replay, a misrouted message, a malformed vector or a share
that fails authentication, and stay usable; evidence of a malicious server (forged keys,
a threshold or graph other than the derived one, a changed survivor set, too few
signatures) makes the client abort the round (:class:`SecAggAbort`).
"""

from __future__ import annotations

from fedpriv.secagg.client import ClientSecAgg
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
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
    "ConsistencyRequest",
    "ConsistencySignature",
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
