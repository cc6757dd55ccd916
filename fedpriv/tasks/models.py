"""Models for the shipped tasks, all Opacus-compatible (no BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn

from fedpriv.config import Model
from fedpriv.tasks.scattering import Scattering2D

__all__ = ["ScatterNetLinear", "TanhCNN", "build_model"]


class _DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits: two 3x3 conv blocks and a linear head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 4, 4)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 2, 2)
        )
        self.head = nn.Linear(32 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)  # (B, 64) -> (B, 1, 8, 8)
        return self.head(self.features(x).flatten(1))


class TanhCNN(nn.Module):
    """Papernot et al.'s CNN for 28x28 grey images, with tanh and group norm, for DP-SGD.

    Papernot, Thakurta, Song, Chien & Erlingsson 2021, "Tempered Sigmoid Activations for
    Deep Learning with Differential Privacy" (AAAI; arXiv:2007.14191), the network of
    their MNIST and Fashion-MNIST experiments (also TensorFlow Privacy's and Opacus' MNIST
    example): conv 16 8x8 stride 2, max-pool 2x2 stride 1, conv 32 4x4 stride 2, max-pool
    2x2 stride 1, dense 32, dense 10, with tanh, the tempered sigmoid
    ``s * sigmoid(T * x) - o`` with s = 2, T = 2, o = 1, instead of ReLU: bounded
    activations keep per-example gradients small, so less is lost to clipping (their
    Section 4). Each convolution is
    followed by group norm (Wu & He 2018), which De et al. 2022 ("Unlocking
    High-Accuracy Differentially Private Image Classification through Scale",
    arXiv:2204.13650) use in place of batch norm: it normalises within an example, so
    per-example gradients stay per-example (Opacus refuses batch norm). About 26,000
    parameters.

    Notes
    -----
    Input is a flat ``(B, 784)`` batch (as the data sets store it) or ``(B, 1, 28, 28)``.
    """

    def __init__(self, num_classes: int, *, groups: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 8, stride=2, padding=3),  # (B, 16, 14, 14)
            nn.GroupNorm(groups, 16), nn.Tanh(),
            nn.MaxPool2d(2, stride=1),  # (B, 16, 13, 13)
            nn.Conv2d(16, 32, 4, stride=2),  # (B, 32, 5, 5)
            nn.GroupNorm(groups, 32), nn.Tanh(),
            nn.MaxPool2d(2, stride=1),  # (B, 32, 4, 4)
        )
        self.head = nn.Sequential(
            nn.Linear(32 * 4 * 4, 32), nn.Tanh(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of a ``(B, 784)`` or ``(B, 1, 28, 28)`` batch."""
        x = x.view(-1, 1, 28, 28)  # (B, 784) -> (B, 1, 28, 28)
        return self.head(self.features(x).flatten(1))  # (B, num_classes)


class ScatterNetLinear(nn.Module):
    """Tramèr & Boneh's ScatterNet + linear model: fixed scattering, group norm, linear.

    Tramèr & Boneh 2021, "Differentially Private Learning Needs Better Features (or Much
    More Data)" (ICLR; arXiv:2011.11660), Section 3 and Table 1: the order-2 scattering
    transform with J = 2, L = 8 (:class:`fedpriv.tasks.scattering.Scattering2D`; 81
    channels of 7 x 7 for a 28 x 28 image), normalised by group norm without affine
    parameters over groups of 3 channels (their data-independent normalisation, Section
    3.1; Wu & He 2018), then one linear layer. Only the linear layer is trained: its
    weight and bias are the model's parameters and ``state_dict`` (the scattering's
    filters are fixed buffers, not saved), so DP-SGD clips and noises exactly those
    39,700 numbers (10 classes).

    Notes
    -----
    ``forward`` takes raw images, flat ``(B, 784)`` or ``(B, 1, 28, 28)``, or the output
    ``(B, 81, 7, 7)`` of :meth:`scatter`, the fixed part (scattering, then group norm
    without parameters: both per-example, data-independent functions). A client computes
    that once per data set (:func:`fedpriv.tasks.model_inputs`) rather than at every
    step; it then goes through the linear layer alone. The two routes give the same
    logits.
    """

    def __init__(self, num_classes: int, *, groups: int = 27, J: int = 2,
                 L: int = 8) -> None:
        super().__init__()
        self.scattering = Scattering2D((28, 28), J=J, L=L)
        channels, h, w = self.scattering.out_shape
        # groups = 0: no normalisation (the ablation of T&B's Section 3.1)
        self.norm: nn.Module = (nn.GroupNorm(groups, channels, affine=False) if groups
                                else nn.Identity())
        self.head = nn.Linear(channels * h * w, num_classes)

    def _fixed(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.scattering(x.reshape(-1, 28, 28)))  # (B, 81, 7, 7)

    @torch.no_grad()
    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed part: group-normed scattering coefficients ``(B, 81, 7, 7)``."""
        return self._fixed(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of raw images or of :meth:`scatter`'s output."""
        if tuple(x.shape[1:]) != self.scattering.out_shape:
            x = self._fixed(x)  # differentiable here (an input gradient reaches the pixels)
        return self.head(x.flatten(1))  # (B, num_classes)


def build_model(model: Model, *, num_features: int, num_classes: int,
                seed: int, scatternet_groups: int = 27) -> nn.Module:
    """Build a freshly initialised model; the same seed gives the same weights.

    Parameters
    ----------
    model : Model
        ``MLP`` (two hidden layers, 128 and 64), ``CNN`` (8x8 digits: a small ReLU CNN;
        28x28 images: :class:`TanhCNN`), ``LOGREG`` (multinomial logistic regression,
        the FedProx Synthetic model) or ``SCATTERNET`` (28x28 images:
        :class:`ScatterNetLinear`).
    num_features, num_classes : int
        Input width and number of labels.
    seed : int
        Seed of the initialisation (a local generator: global RNG state is untouched).
    scatternet_groups : int
        ``SCATTERNET`` only: the group norm's groups (0: no normalisation).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: what fork_rng restores
        if model is Model.MLP:
            return nn.Sequential(
                nn.Linear(num_features, 128), nn.ReLU(),
                nn.Linear(128, 64), nn.ReLU(),
                nn.Linear(64, num_classes),
            )
        if model is Model.CNN:
            if num_features == 64:
                return _DigitsCNN(num_classes)
            if num_features == 28 * 28:
                return TanhCNN(num_classes)
            raise ValueError(
                f"the CNN takes 8x8 (64 features) or 28x28 (784) images, got {num_features}"
            )
        if model is Model.LOGREG:
            return nn.Linear(num_features, num_classes)
        if model is Model.SCATTERNET:
            if num_features != 28 * 28:
                raise ValueError(f"the ScatterNet model takes 28x28 images (784 features), "
                                 f"got {num_features}")
            return ScatterNetLinear(num_classes, groups=scatternet_groups)
    raise ValueError(f"model must be resolved (mlp, cnn, logreg, scatternet), got "
                     f"{model.value!r}")
