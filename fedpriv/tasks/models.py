"""Models for the shipped tasks, all Opacus-compatible (no BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn

from fedpriv.config import Model

__all__ = ["build_model"]


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


def build_model(model: Model, *, num_features: int, num_classes: int,
                seed: int) -> nn.Module:
    """Build a freshly initialised model; the same seed gives the same weights.

    Parameters
    ----------
    model : Model
        ``MLP`` (two hidden layers, 128 and 64), ``CNN`` (digits only) or ``LOGREG``
        (multinomial logistic regression, the FedProx Synthetic model).
    num_features, num_classes : int
        Input width and number of labels.
    seed : int
        Seed of the initialisation (a local generator: global RNG state is untouched).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model is Model.MLP:
            return nn.Sequential(
                nn.Linear(num_features, 128), nn.ReLU(),
                nn.Linear(128, 64), nn.ReLU(),
                nn.Linear(64, num_classes),
            )
        if model is Model.CNN:
            if num_features != 64:
                raise ValueError(f"the CNN takes 8x8 inputs (64 features), got {num_features}")
            return _DigitsCNN(num_classes)
        if model is Model.LOGREG:
            return nn.Linear(num_features, num_classes)
    raise ValueError(f"model must be resolved (mlp, cnn, logreg), got {model.value!r}")
