"""The FedProx Synthetic(alpha, beta) benchmark, generated from a seed.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (MLSys), Section 5.1
and Appendix C.1: for user k, ``u_k ~ N(0, alpha)``, ``B_k ~ N(0, beta)``; the local
model ``W_k ~ N(u_k, 1)`` (10x60), ``b_k ~ N(u_k, 1)``; features
``x ~ N(v_k, Sigma)`` with ``v_k[j] ~ N(B_k, 1)`` and diagonal
``Sigma_jj = j^(-1.2)``; labels ``y = argmax(softmax(W_k x + b_k))``. User sizes
follow a power law (lognormal in the authors' generator). alpha controls how much the
local models differ, beta how much the local data differ.
"""

from __future__ import annotations

import numpy as np

from fedpriv.tasks.data import ArrayDataset, TaskData

__all__ = ["NUM_CLASSES", "NUM_FEATURES", "generate_synthetic"]

NUM_FEATURES = 60
NUM_CLASSES = 10


def generate_synthetic(
    *,
    alpha: float,
    beta: float,
    num_users: int,
    test_fraction: float,
    seed: int,
    size_mean: float = 4.0,
    size_sigma: float = 2.0,
    min_size: int = 50,
    max_size: int = 2000,
) -> TaskData:
    """Generate Synthetic(alpha, beta) with its natural per-user partition.

    Parameters
    ----------
    alpha, beta : float
        Model and data heterogeneity (the paper's alpha, beta; variances, not std).
    num_users : int
        Number of users (the paper uses 30).
    test_fraction : float
        Fraction of each user's samples pooled into the server's test split.
    seed : int
        Seed of everything generated.
    size_mean, size_sigma, min_size, max_size : float, float, int, int
        Users' sizes are ``min_size + lognormal(size_mean, size_sigma)`` as in the
        authors' generator, capped at ``max_size`` to keep simulations small.

    Returns
    -------
    TaskData
        ``natural_partition[k]`` indexes user k's rows of ``train``.
    """
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}")
    rng = np.random.default_rng(seed)
    sizes = np.minimum(
        rng.lognormal(size_mean, size_sigma, num_users).astype(np.int64) + min_size,
        max_size,
    )
    j = np.arange(1, NUM_FEATURES + 1, dtype=np.float64)
    cov_diag = j ** (-1.2)  # Sigma_jj

    xs_tr, ys_tr, xs_te, ys_te, parts = [], [], [], [], []
    offset = 0
    for k in range(num_users):
        u_k = rng.normal(0.0, np.sqrt(alpha))
        b_k = rng.normal(0.0, np.sqrt(beta))
        w = rng.normal(u_k, 1.0, (NUM_CLASSES, NUM_FEATURES))  # (10, 60)
        bias = rng.normal(u_k, 1.0, NUM_CLASSES)  # (10,)
        v_k = rng.normal(b_k, 1.0, NUM_FEATURES)  # (60,)
        n = int(sizes[k])
        x = rng.normal(v_k, np.sqrt(cov_diag), (n, NUM_FEATURES))  # (n, 60)
        y = np.argmax(x @ w.T + bias, axis=1)  # softmax is monotone: argmax of logits
        n_test = max(1, int(round(n * test_fraction)))
        xs_te.append(x[:n_test])
        ys_te.append(y[:n_test])
        xs_tr.append(x[n_test:])
        ys_tr.append(y[n_test:])
        parts.append(np.arange(offset, offset + n - n_test))
        offset += n - n_test
    train = ArrayDataset(
        np.concatenate(xs_tr).astype(np.float32), np.concatenate(ys_tr).astype(np.int64)
    )
    test = ArrayDataset(
        np.concatenate(xs_te).astype(np.float32), np.concatenate(ys_te).astype(np.int64)
    )
    return TaskData(train=train, test=test, num_classes=NUM_CLASSES, natural_partition=parts)
