"""Client SGD without ``torch.optim``: the same update, without importing ``torch._dynamo``.

torch 2.x wraps ``Optimizer.add_param_group`` in ``torch._disable_dynamo``, whose first call
imports ``torch._dynamo`` and with it sympy and mpmath: constructing any ``torch.optim``
optimizer loads ~820 modules and adds ~71 MB of resident memory (torch 2.13, measured by
``bench/edge.py``'s breakdown), a quarter of an edge client's peak, for a compiler a
device's train round never uses. :class:`Sgd` applies ``torch.optim.SGD``'s update
exactly (its single-tensor path, the one torch takes for CPU parameters: heavy-ball
momentum with the first buffer a copy of the gradient, no dampening, no Nesterov, no weight
decay), and the tests check it against ``torch.optim.SGD`` bit for bit over many steps.

Opacus' ``PrivacyEngine`` needs a real ``torch.optim.Optimizer`` to wrap; the client builds
one there only (the paths that import Opacus load far more anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch

__all__ = ["Sgd", "StepOptimizer"]


class StepOptimizer(Protocol):
    """What the training loops need of an optimizer (``torch.optim.SGD`` or :class:`Sgd`)."""

    param_groups: list[dict[str, Any]]

    def step(self) -> Any:
        """Apply one update from the parameters' ``.grad``."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the parameters' gradients."""


class Sgd:
    """``torch.optim.SGD(params, lr, momentum)``'s update, with no ``torch.optim`` import.

    For each parameter with a gradient ``g``: ``b = g`` on its first step and
    ``b = momentum * b + g`` after, then ``p -= lr * b`` (``b = g`` without momentum);
    Polyak's heavy ball as PyTorch writes it (Sutskever et al. 2013, Eq. 1-2, with the
    learning rate moved onto the buffer). A parameter whose gradient is ``None`` is skipped
    and its buffer kept, as torch does.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0
                 ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum!r}")
        group = list(params)
        if not group:
            raise ValueError("Sgd got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [
            {"params": group, "lr": float(lr), "momentum": float(momentum)}]
        self._buffers: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if momentum != 0.0:
                    buf = self._buffers.get(id(p))
                    if buf is None:
                        buf = self._buffers[id(p)] = grad.detach().clone()
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1.0)
                    grad = buf
                p.add_(grad, alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()
