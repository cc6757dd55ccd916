"""Secure aggregation (SecAgg+, Bell et al. 2020) against a malicious server.

Pure state machines and math: numpy and ``cryptography`` only; no Flower, files or
global state. See :mod:`fedpriv.secagg.protocol` for the rounds.
"""

from fedpriv.secagg.aead import aead_decrypt, aead_encrypt, associated_data
from fedpriv.secagg.client import ClientSecAgg
from fedpriv.secagg.driver import Enrolment, Transcript, drive_round, enrol, run_round
from fedpriv.secagg.errors import SecAggAbort, SecAggError, ShareAuthenticationError
from fedpriv.secagg.graph import components, default_degree, regular_graph
from fedpriv.secagg.identity import (
    IdentityKey,
    Roster,
    advert_payload,
    cohort_digest,
    consistency_payload,
)
from fedpriv.secagg.keys import KeyPair, KeyPurpose, agree, agreement_info, pair_key
from fedpriv.secagg.layout import DecodedSum, SumLayout, layout_for
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    Message,
    NeighbourKeys,
    RoutedShares,
    ShareKeys,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
    message_from_dict,
    wire_size,
)
from fedpriv.secagg.params import (
    SecurityParams,
    derive_setup,
    params_for,
    secure_degree,
)
from fedpriv.secagg.prg import accumulate, expand_mask
from fedpriv.secagg.quantize import Quantizer
from fedpriv.secagg.server import ServerSecAgg
from fedpriv.secagg.setup import RoundSetup, Stage, setup_from_dict, setup_to_dict
from fedpriv.secagg.shamir import (
    PRIME,
    Share,
    combine,
    share_from_bytes,
    share_to_bytes,
    split,
)
from fedpriv.secagg.wire import pack, unpack, word_bytes

__all__ = [
    "PRIME",
    "AdvertiseKeys",
    "ClientSecAgg",
    "ConsistencyRequest",
    "ConsistencySignature",
    "DecodedSum",
    "Enrolment",
    "IdentityKey",
    "KeyPair",
    "KeyPurpose",
    "MaskedInput",
    "Message",
    "NeighbourKeys",
    "Quantizer",
    "Roster",
    "RoundSetup",
    "RoutedShares",
    "SecAggAbort",
    "SecAggError",
    "SecurityParams",
    "ServerSecAgg",
    "Share",
    "ShareAuthenticationError",
    "ShareKeys",
    "ShareKind",
    "Stage",
    "SumLayout",
    "Transcript",
    "UnmaskRequest",
    "UnmaskShares",
    "accumulate",
    "advert_payload",
    "aead_decrypt",
    "aead_encrypt",
    "agree",
    "agreement_info",
    "associated_data",
    "cohort_digest",
    "combine",
    "components",
    "consistency_payload",
    "default_degree",
    "derive_setup",
    "drive_round",
    "enrol",
    "expand_mask",
    "layout_for",
    "pack",
    "message_from_dict",
    "pair_key",
    "params_for",
    "regular_graph",
    "run_round",
    "secure_degree",
    "setup_from_dict",
    "setup_to_dict",
    "share_from_bytes",
    "share_to_bytes",
    "split",
    "unpack",
    "wire_size",
    "word_bytes",
]
