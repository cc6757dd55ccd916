"""Differential-privacy mechanisms, accounting and the privacy ledger (pure: no Flower)."""

from fedpriv.privacy.accounting import (
    Accountant,
    calibrate_noise_multiplier,
    epsilon,
    epsilon_by_step,
)
from fedpriv.privacy.adaptive import AdaptiveClip, corrected_noise_multiplier
from fedpriv.privacy.clipping import clip_by_l2, l2_norm
from fedpriv.privacy.events import (
    DpEvent,
    DpSgdEvent,
    GaussianSumEvent,
    Mechanism,
    event_from_dict,
)
from fedpriv.privacy.ledger import GENESIS, ChainReport, LedgerEntry, LedgerError, PrivacyLedger
from fedpriv.privacy.noise import GaussianSource, SecureGaussian, SeededGaussian

__all__ = [
    "GENESIS",
    "Accountant",
    "AdaptiveClip",
    "ChainReport",
    "DpEvent",
    "DpSgdEvent",
    "GaussianSource",
    "GaussianSumEvent",
    "LedgerEntry",
    "LedgerError",
    "Mechanism",
    "PrivacyLedger",
    "SecureGaussian",
    "SeededGaussian",
    "calibrate_noise_multiplier",
    "clip_by_l2",
    "corrected_noise_multiplier",
    "epsilon",
    "epsilon_by_step",
    "event_from_dict",
    "l2_norm",
]
