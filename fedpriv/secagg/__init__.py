"""Secure aggregation (SecAgg+, Bell et al. 2020): pure state machines; no Flower or I/O."""

from fedpriv.secagg.aead import aead_decrypt, aead_encrypt, associated_data
from fedpriv.secagg.client import ClientSecAgg
from fedpriv.secagg.driver import Transcript, drive_round, make_setup, run_round
from fedpriv.secagg.errors import SecAggAbort, SecAggError, ShareAuthenticationError
from fedpriv.secagg.graph import default_degree, regular_graph
from fedpriv.secagg.keys import KeyPair, KeyPurpose, agree, agreement_info, pair_key
from fedpriv.secagg.messages import (
    AdvertiseKeys,
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
from fedpriv.secagg.prg import expand_mask
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

__all__ = [
    "PRIME",
    "AdvertiseKeys",
    "ClientSecAgg",
    "KeyPair",
    "KeyPurpose",
    "MaskedInput",
    "Message",
    "NeighbourKeys",
    "Quantizer",
    "RoundSetup",
    "RoutedShares",
    "SecAggAbort",
    "SecAggError",
    "ServerSecAgg",
    "Share",
    "ShareAuthenticationError",
    "ShareKeys",
    "ShareKind",
    "Stage",
    "Transcript",
    "UnmaskRequest",
    "UnmaskShares",
    "aead_decrypt",
    "aead_encrypt",
    "agree",
    "agreement_info",
    "associated_data",
    "combine",
    "default_degree",
    "drive_round",
    "expand_mask",
    "make_setup",
    "message_from_dict",
    "pair_key",
    "regular_graph",
    "run_round",
    "setup_from_dict",
    "setup_to_dict",
    "share_from_bytes",
    "share_to_bytes",
    "split",
    "wire_size",
]
