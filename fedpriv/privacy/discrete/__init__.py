"""Distributed DP under secure aggregation: the pure math (no Flower, no torch).

Each client clips its update, rotates it (randomised Walsh-Hadamard, public seed),
scales it by gamma, rounds it to integers conditionally on an L2 bound, adds its share of
discrete noise (Skellam or discrete Gaussian) and reduces it mod 2^b; the server unmasks
only the noised sum and decodes it. Kairouz, Liu & Steinke 2021 (ICML, arXiv:2102.06387)
and Agarwal, Kairouz & Liu 2021 (NeurIPS, arXiv:2110.04995); see each module.

Modules: ``uniform`` (secure / seeded uniforms), ``discrete_gaussian`` and ``skellam``
(samplers), ``rotation``, ``rounding``, ``rdp`` (accounting), ``wraparound``, ``params``,
``calibration`` and ``codec`` (encode / decode).
"""

from typing import TYPE_CHECKING

from fedpriv._lazy import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers; at run time each loads on first use
    from fedpriv.privacy.discrete.calibration import Calibration, calibrate, distributed_epsilon
    from fedpriv.privacy.discrete.codec import add_mod, centre_mod, decode, encode, noise_share
    from fedpriv.privacy.discrete.discrete_gaussian import MAX_SIGMA, discrete_gaussian
    from fedpriv.privacy.discrete.params import DEFAULT_BETA, DistributedDpParams
    from fedpriv.privacy.discrete.rdp import (
        RDP_ORDERS,
        ddg_rdp,
        ddg_tau,
        distributed_rdp,
        event_rdp,
        poisson_subsampled_rdp,
        rdp_to_epsilon,
        skellam_rdp,
    )
    from fedpriv.privacy.discrete.rotation import (
        hadamard_transform,
        padded_dimension,
        rotate,
        rotation_signs,
        unrotate,
    )
    from fedpriv.privacy.discrete.rounding import (
        conditional_round,
        conditional_rounding_bias_bound,
        l1_sensitivity,
        rounded_l2_bound,
        stochastic_round,
    )
    from fedpriv.privacy.discrete.skellam import MAX_POISSON_MEAN, poisson, poisson_logpmf, skellam
    from fedpriv.privacy.discrete.uniform import SecureUniforms, SeededUniforms, UniformSource
    from fedpriv.privacy.discrete.wraparound import (
        coordinate_tail_bound,
        min_bits,
        wrap_probability,
    )

__getattr__, __dir__ = lazy_exports(__name__, {
    "calibration": ("Calibration", "calibrate", "distributed_epsilon"),
    "codec": ("add_mod", "centre_mod", "decode", "encode", "noise_share"),
    "discrete_gaussian": ("MAX_SIGMA", "discrete_gaussian"),
    "params": ("DEFAULT_BETA", "DistributedDpParams"),
    "rdp": (
        "RDP_ORDERS", "ddg_rdp", "ddg_tau", "distributed_rdp", "event_rdp",
        "poisson_subsampled_rdp", "rdp_to_epsilon", "skellam_rdp"),
    "rotation": ("hadamard_transform", "padded_dimension", "rotate", "rotation_signs", "unrotate"),
    "rounding": (
        "conditional_round", "conditional_rounding_bias_bound", "l1_sensitivity",
        "rounded_l2_bound", "stochastic_round"),
    "skellam": ("MAX_POISSON_MEAN", "poisson", "poisson_logpmf", "skellam"),
    "uniform": ("SecureUniforms", "SeededUniforms", "UniformSource"),
    "wraparound": ("coordinate_tail_bound", "min_bits", "wrap_probability"),
})

__all__ = [
    "DEFAULT_BETA",
    "MAX_POISSON_MEAN",
    "MAX_SIGMA",
    "RDP_ORDERS",
    "Calibration",
    "DistributedDpParams",
    "SecureUniforms",
    "SeededUniforms",
    "UniformSource",
    "add_mod",
    "calibrate",
    "centre_mod",
    "conditional_round",
    "conditional_rounding_bias_bound",
    "coordinate_tail_bound",
    "ddg_rdp",
    "ddg_tau",
    "decode",
    "discrete_gaussian",
    "distributed_epsilon",
    "distributed_rdp",
    "encode",
    "event_rdp",
    "hadamard_transform",
    "l1_sensitivity",
    "min_bits",
    "noise_share",
    "padded_dimension",
    "poisson",
    "poisson_logpmf",
    "poisson_subsampled_rdp",
    "rdp_to_epsilon",
    "rotate",
    "rotation_signs",
    "rounded_l2_bound",
    "skellam",
    "skellam_rdp",
    "stochastic_round",
    "unrotate",
    "wrap_probability",
]
