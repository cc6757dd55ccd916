"""Differential-privacy mechanisms, accounting, budgets and the privacy ledger.

Pure: numpy, scipy, dp-accounting and the standard library's ``sqlite3``; never Flower,
sockets or global state.
"""

from typing import TYPE_CHECKING

from fedpriv._lazy import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers; at run time each loads on first use
    from fedpriv.privacy.accounting import (
        PLD_DISCRETIZATION,
        Accountant,
        calibrate_noise_multiplier,
        epsilon,
        epsilon_by_step,
    )
    from fedpriv.privacy.adaptive import (
        AdaptiveClip,
        combined_noise_multiplier,
        corrected_noise_multiplier,
        geometric_clip_update,
        noised_unclipped_fraction,
    )
    from fedpriv.privacy.budget import projected_epsilon
    from fedpriv.privacy.canary import (
        canary_direction,
        cosines,
        empirical_epsilon,
        gaussian_pair_epsilon,
    )
    from fedpriv.privacy.clipping import clip_by_l2, l2_norm
    from fedpriv.privacy.events import (
        DistributedNoiseEvent,
        DpEvent,
        DpSgdEvent,
        GaussianSumEvent,
        Mechanism,
        event_from_dict,
        sampled_gaussian,
    )
    from fedpriv.privacy.ledger import (
        GENESIS,
        RESUME,
        ChainReport,
        KeyRotation,
        LedgerEntry,
        LedgerError,
        PrivacyLedger,
    )
    from fedpriv.privacy.noise import (
        GaussianSource,
        SecureGaussian,
        SeededGaussian,
        add_gaussian_noise,
        gaussian_noise,
    )

__getattr__, __dir__ = lazy_exports(__name__, {
    "accounting": (
        "PLD_DISCRETIZATION", "Accountant", "calibrate_noise_multiplier", "epsilon",
        "epsilon_by_step"),
    "adaptive": (
        "AdaptiveClip", "combined_noise_multiplier", "corrected_noise_multiplier",
        "geometric_clip_update", "noised_unclipped_fraction"),
    "budget": ("projected_epsilon",),
    "canary": ("canary_direction", "cosines", "empirical_epsilon", "gaussian_pair_epsilon"),
    "clipping": ("clip_by_l2", "l2_norm"),
    "events": (
        "DistributedNoiseEvent", "DpEvent", "DpSgdEvent", "GaussianSumEvent", "Mechanism",
        "event_from_dict", "sampled_gaussian"),
    "ledger": (
        "GENESIS", "RESUME", "ChainReport", "KeyRotation", "LedgerEntry", "LedgerError",
        "PrivacyLedger"),
    "noise": (
        "GaussianSource", "SecureGaussian", "SeededGaussian", "add_gaussian_noise",
        "gaussian_noise"),
})

__all__ = [
    "GENESIS",
    "PLD_DISCRETIZATION",
    "Accountant",
    "AdaptiveClip",
    "ChainReport",
    "DistributedNoiseEvent",
    "DpEvent",
    "DpSgdEvent",
    "GaussianSource",
    "GaussianSumEvent",
    "KeyRotation",
    "LedgerEntry",
    "LedgerError",
    "Mechanism",
    "PrivacyLedger",
    "RESUME",
    "SecureGaussian",
    "SeededGaussian",
    "add_gaussian_noise",
    "calibrate_noise_multiplier",
    "canary_direction",
    "clip_by_l2",
    "combined_noise_multiplier",
    "corrected_noise_multiplier",
    "cosines",
    "empirical_epsilon",
    "epsilon",
    "epsilon_by_step",
    "event_from_dict",
    "gaussian_noise",
    "gaussian_pair_epsilon",
    "geometric_clip_update",
    "l2_norm",
    "noised_unclipped_fraction",
    "projected_epsilon",
    "sampled_gaussian",
]
