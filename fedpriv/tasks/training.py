"""Local training and evaluation loops shared by clients, the server and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from fedpriv.config import Device, Model, RunConfig
from fedpriv.tasks.data import ArrayDataset
from fedpriv.tasks.lm import LoraLanguageModel, SequenceNll
from fedpriv.tasks.optim import StepOptimizer
from fedpriv.tasks.ratings import AsymmetricSvd, RatingLoss, evaluate_ratings

__all__ = ["evaluate", "proximal_term", "resolve_device", "task_criterion", "train_epochs"]


def task_criterion(cfg: RunConfig) -> nn.Module:
    """The training loss: cross-entropy, or a per-example mean for sequence models.

    A language model: each example's mean token NLL; a rating model: each user's mean
    squared error.
    """
    if cfg.resolved_model is Model.LM_LORA:
        return SequenceNll()
    if cfg.resolved_model is Model.ASVD:
        return RatingLoss()
    return nn.CrossEntropyLoss()


def resolve_device(device: Device) -> torch.device:
    """``auto`` means CUDA when available; asking for ``cuda`` without one is an error."""
    if device is Device.CUDA:
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for, but no CUDA device is available")
        return torch.device("cuda")
    if device is Device.AUTO and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def train_epochs(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: StepOptimizer,
    *,
    epochs: int,
    device: torch.device,
    proximal_mu: float = 0.0,
    global_params: list[torch.Tensor] | None = None,
    criterion: nn.Module | None = None,
) -> float:
    """Run ``epochs`` passes of SGD and return the mean training loss.

    ``criterion`` defaults to cross-entropy (see :func:`task_criterion`). With
    ``proximal_mu > 0`` the loss gains FedProx's proximal term
    ``(mu / 2) * ||w - w_global||^2`` (Li et al. 2020, Eq. 2).
    """
    if proximal_mu > 0 and global_params is None:
        raise ValueError("global_params are required when proximal_mu > 0")
    model.train()
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for _ in range(epochs):
        for xb, yb in loader:
            if len(yb) == 0:  # Poisson sampling can draw an empty batch
                continue
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            if proximal_mu > 0:
                assert global_params is not None
                loss = loss + proximal_term(model, global_params, proximal_mu)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
    return total / count if count else float("nan")


def proximal_term(model: nn.Module, global_params: list[torch.Tensor],
                  mu: float) -> torch.Tensor:
    """FedProx's ``(mu / 2) * ||w - w_global||^2`` (Li et al. 2020, Eq. 2).

    Over the trainable parameters (``global_params`` in their order): a frozen base
    never moves, and copying it every round would cost its size.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    sq = sum(((w - g) ** 2).sum() for w, g in zip(trainable, global_params, strict=True))
    return 0.5 * mu * sq  # type: ignore[return-value]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ArrayDataset, *, device: torch.device, batch_size: int = 512
) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) of ``model`` on ``data``.

    A language model (:class:`LoraLanguageModel`): the mean NLL per predicted token (its
    exponential is the perplexity) and next-token top-1 accuracy. A rating model
    (:class:`AsymmetricSvd`): the mean squared error per held-out rating (its square root
    is the RMSE) and the share predicted within half a star.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    if isinstance(model, LoraLanguageModel):
        return _evaluate_lm(model, data, device=device, batch_size=min(batch_size, 16))
    if isinstance(model, AsymmetricSvd):
        return evaluate_ratings(model, data, device=device, batch_size=min(batch_size, 32))
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss, correct = 0.0, 0
    for start in range(0, len(data), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(data.x[start:start + batch_size])).to(device)
        yb = torch.from_numpy(np.ascontiguousarray(data.y[start:start + batch_size])).to(device)
        logits = model(xb)
        loss += float(criterion(logits, yb))
        correct += int((logits.argmax(1) == yb).sum())
    return loss / len(data), correct / len(data)


@torch.no_grad()
def _evaluate_lm(model: LoraLanguageModel, data: ArrayDataset, *, device: torch.device,
                 batch_size: int) -> tuple[float, float]:
    """Token-weighted mean NLL and next-token accuracy over right-padded ids."""
    model.eval()
    nll_sum, correct, tokens = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        ids = torch.from_numpy(np.ascontiguousarray(data.x[start:start + batch_size]))
        ids = ids.to(device)  # (B, L)
        logits = model.logits(ids)[:, :-1]  # (B, L-1, V)
        target = ids[:, 1:]  # (B, L-1)
        valid = target >= 0
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, L-1)
        nll_sum += float((nll * valid).sum())
        correct += int(((logits.argmax(-1) == target) & valid).sum())
        tokens += int(valid.sum())
    if tokens == 0:
        raise ValueError("cannot evaluate a language model on texts of < 2 tokens")
    return nll_sum / tokens, correct / tokens
