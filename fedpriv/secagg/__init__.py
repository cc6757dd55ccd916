"""Secure aggregation (SecAgg+, Bell et al. 2020): pure state machines, no Flower, no I/O."""

from fedpriv.secagg.crypto import KeyPair, aead_decrypt, aead_encrypt, agree, expand_mask
from fedpriv.secagg.driver import make_setup, run_round
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.graph import default_degree, regular_graph
from fedpriv.secagg.protocol import ClientSecAgg, RoundSetup, Stage
from fedpriv.secagg.quantize import Quantizer
from fedpriv.secagg.server import ServerSecAgg
from fedpriv.secagg.shamir import PRIME, combine, split

__all__ = [
    "PRIME",
    "ClientSecAgg",
    "KeyPair",
    "Quantizer",
    "RoundSetup",
    "SecAggAbort",
    "SecAggError",
    "ServerSecAgg",
    "Stage",
    "aead_decrypt",
    "aead_encrypt",
    "agree",
    "combine",
    "default_degree",
    "expand_mask",
    "regular_graph",
    "make_setup",
    "run_round",
    "split",
]
