"""A rating model whose shared parameters are item-side only: asymmetric SVD.

Koren 2008, "Factorization Meets the Neighborhood: a Multifaceted Collaborative Filtering
Model" (KDD), Section 4.1, Eq. 13 (after Paterek 2007's NSVD): a user is represented by
the items they rated, not by a free vector::

    r_hat_ui = mu + b_i + b_u + q_i^T ( |R(u)|^(-1/2) sum_{j in R(u)} (r_uj - b_uj) y_j )

with the baseline ``b_uj = mu + b_u + b_j`` (Koren 2008, Eq. 1).

The shared parameters are ``mu``, the item biases ``b_i`` and two item-factor tables
``q``, ``y`` (``num_items x f``). The user's bias ``b_u`` and factor vector are computed
from the user's own ratings on the device, inside :meth:`AsymmetricSvd.predict`:
nothing user-specific is a parameter, so nothing user-specific is sent, clipped, noised
or checkpointed, and a new user needs no training to be served (Koren's "new users"
argument, Section 4.1). This is what fits fedpriv's shared-model pipeline: the model
the server averages is the model every client uses.

``b_u`` is the user's mean offset from the item baselines, shrunk towards zero:
``b_u = sum_j (r_uj - mu - b_j) / (|R(u)| + lambda_u)`` (Koren 2010, TKDD 4(1), Eq. 2
with ``lambda_u`` = :data:`USER_SHRINKAGE`).

Leave one out. A training example marks each rating both context and target (see
:mod:`fedpriv.tasks.movielens`); rating ``r_uj`` is then predicted from the user's
*other* ratings (``R(u)`` without ``j`` in both sums), so the model cannot learn to copy its
input, and training matches testing, where held-out ratings are never in ``R(u)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedpriv.tasks.data import ArrayDataset
from fedpriv.tasks.movielens import CONTEXT, RATING_RANGE, TARGET

__all__ = ["USER_SHRINKAGE", "AsymmetricSvd", "RatingLoss", "build_asvd", "evaluate_ratings"]

#: lambda_u of the user-bias estimate (Koren 2010, Eq. 2): pseudo-ratings at the baseline.
USER_SHRINKAGE = 5.0
#: Initial mu: the middle of the rating scale (data-independent, learned from there).
_MU0 = 0.5 * (RATING_RANGE[0] + RATING_RANGE[1])
#: Standard deviation of the factor tables' initialisation (a common MF choice).
_INIT_STD = 0.1


class AsymmetricSvd(nn.Module):
    """Asymmetric SVD over ``(B, L, 3)`` rating lists (Koren 2008, Eq. 13).

    ``forward(x)`` returns the ``(B, L)`` squared error of each target rating (0
    elsewhere), as :class:`fedpriv.tasks.lm.LoraLanguageModel` returns per-token losses:
    one input, so the training loops and clipping treat it like any model (see
    :class:`RatingLoss`). :meth:`predict` returns the predicted ratings.

    Parameters
    ----------
    num_items : int
        Catalogue size.
    factors : int
        f, the width of ``q`` and ``y`` (0: ``mu + b_i + b_u`` only).

    Notes
    -----
    Parameters map to Koren's symbols: ``mu`` (an ``Embedding(1, 1)`` so that every
    parameter sits in a layer Opacus knows), ``item_bias`` ``b_i``, ``q`` ``q_i``, ``y``
    ``y_j``.
    """

    def __init__(self, num_items: int, factors: int) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if factors < 0:
            raise ValueError(f"factors must be >= 0, got {factors}")
        self.num_items, self.factors = num_items, factors
        self.mu = nn.Embedding(1, 1)
        nn.init.constant_(self.mu.weight, _MU0)
        self.item_bias = nn.Embedding(num_items, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.q: nn.Embedding | None = None
        self.y: nn.Embedding | None = None
        if factors:
            self.q = nn.Embedding(num_items, factors)
            self.y = nn.Embedding(num_items, factors)
            nn.init.normal_(self.q.weight, std=_INIT_STD)
            nn.init.normal_(self.y.weight, std=_INIT_STD)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` predicted ratings; a context-and-target rating is left out of its own."""
        items = x[..., 0]  # (B, L)
        idx = items.clamp(min=0).long()
        role = x[..., 2].long()
        valid = items >= 0
        c = (((role & CONTEXT) > 0) & valid).to(x.dtype)  # (B, L): in R(u)
        mu = self.mu(torch.zeros_like(idx[:, :1])).squeeze(-1)  # (B, 1)
        base = mu + self.item_bias(idx).squeeze(-1)  # (B, L): mu + b_j
        e = (x[..., 1] - base) * c  # (B, L): r_uj - mu - b_j on R(u), else 0
        n_rest = c.sum(1, keepdim=True) - c  # (B, L): |R(u) \ {j}|
        b_u = (e.sum(1, keepdim=True) - e) / (n_rest + USER_SHRINKAGE)  # (B, L)
        pred = base + b_u
        if self.q is not None and self.y is not None:
            y = self.y(idx) * c.unsqueeze(-1)  # (B, L, f): y_k on R(u), else 0
            ey = e.unsqueeze(-1) * y  # (B, L, f)
            # sum over k in R(u) \ {j} of (e_k - b_u) y_k, with j's own b_u (exact LOO)
            s_ey = ey.sum(1, keepdim=True) - ey  # (B, L, f)
            s_y = y.sum(1, keepdim=True) - y  # (B, L, f)
            p_u = (s_ey - b_u.unsqueeze(-1) * s_y) / (n_rest + 1.0).sqrt().unsqueeze(-1)
            pred = pred + (self.q(idx) * p_u).sum(-1)  # (B, L)
        return pred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L')`` squared errors of the target ratings, 0 elsewhere.

        ``L'`` is the batch's longest rating list: trailing padding is cut first.
        """
        x = _trim(x)
        t = (((x[..., 2].long() & TARGET) > 0) & (x[..., 0] >= 0)).to(x.dtype)  # (B, L)
        return (self.predict(x) - x[..., 1]) ** 2 * t


def _trim(x: torch.Tensor) -> torch.Tensor:
    """``x`` without the padding columns every example shares (padding is trailing)."""
    width = int((x[..., 0] >= 0).sum(1).max()) if x.shape[0] else 0
    return x[:, :max(width, 1)]


class RatingLoss(nn.Module):
    """Mean over users of each user's mean squared error: ``(1/B) sum_u l_u``.

    Takes :class:`AsymmetricSvd`'s ``(B, L)`` output and the ``(B,)`` target counts (the
    data set's labels). A per-example mean, as Opacus' ``loss_reduction = "mean"``
    assumes (see :class:`fedpriv.tasks.lm.SequenceNll`, the same shape of loss). A mean
    over the user's ratings, not a sum: with a sum the curvature in ``y`` grows with the
    user's rating count (2,391 for the heaviest person) and one learning rate cannot suit
    everyone (measured: a sum diverged at lr 0.05 where the mean is stable at 2).
    """

    def forward(self, se: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The batch loss (a scalar; NaN for an empty batch)."""
        return (se.sum(1) / counts.to(se.dtype).clamp(min=1)).mean()


def build_asvd(num_items: int, factors: int, *, seed: int) -> AsymmetricSvd:
    """A freshly initialised :class:`AsymmetricSvd`; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AsymmetricSvd(num_items, factors)


@torch.no_grad()
def evaluate_ratings(model: AsymmetricSvd, data: ArrayDataset, *, device: torch.device,
                     batch_size: int = 32) -> tuple[float, float]:
    """(mean squared error per target rating, share within half a star).

    Predictions are clipped to :data:`RATING_RANGE` first (a prediction outside the scale
    is never better than its edge). The RMSE is the square root of the first value.
    """
    model.eval()
    lo, hi = RATING_RANGE
    se, close, count = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data.x[start:start + batch_size],
                                                  dtype=np.float32)).to(device)
        x = _trim(x)  # (B, L', 3)
        t = ((x[..., 2].long() & TARGET) > 0) & (x[..., 0] >= 0)  # (B, L)
        err = (model.predict(x).clamp(lo, hi) - x[..., 1])[t]  # (targets,)
        se += float((err ** 2).sum())
        close += int((err.abs() <= 0.5).sum())
        count += int(t.sum())
    if count == 0:
        raise ValueError("cannot evaluate ratings without target ratings")
    mse = se / count
    if not math.isfinite(mse):
        return math.inf, close / count
    return mse, close / count
