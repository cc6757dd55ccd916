"""Exact per-example clipping in one backward pass for stacks of linear layers.

DP-SGD (Abadi et al. 2016, Algorithm 1) needs, per step, ``sum_i g_i * min(1, C/||g_i||)``
over the examples ``i`` of a Poisson batch, where ``g_i`` is example ``i``'s gradient
over *all* parameters. For a linear layer ``y = W a + b`` applied to one example's
activation ``a`` (a vector), example ``i``'s gradients are the outer product
``dW_i = e_i a_i^T`` and ``db_i = e_i``, where ``e_i = dL_i/dy_i`` is the gradient at the
layer's output. Their squared norms factor (Goodfellow 2015, "Efficient Per-Example
Gradient Computations", arXiv:1510.01799; the "ghost norm" of Li et al. 2022,
arXiv:2110.05679, Section 4):

    ||dW_i||_F^2 = ||e_i||^2 * ||a_i||^2,      ||db_i||^2 = ||e_i||^2,

so no per-example gradient is ever materialised. With the per-example factors
``c_i = min(1, C / (||g_i|| + 1e-6))`` (Opacus' formula, so both agree), the clipped sums
are one matrix product per layer (the book-keeping of Bu et al. 2023, "Differentially
Private Optimization on Large Model at Small Cost", ICML, Algorithm 2):

    sum_i c_i dW_i = (c * E)^T A,      sum_i c_i db_i = sum_i c_i e_i.

One backward pass yields every ``e_i`` (captured by hooks) while autograd is told not to
form the parameters' own (unclipped) gradients, which would be thrown away. Opacus'
hooks instead build a ``(B, out, in)`` per-example gradient for every layer, and its
ghost clipping runs a second backward; on the digits MLP this is 3-6x faster (see
``bench/suites/dpsgd.py``).

What this covers is deliberately narrow: a model whose parameters all belong to
``nn.Linear`` layers applied once per forward to ``(B, features)`` inputs, with
parameter-free layers in between. :func:`supports` says whether a model qualifies;
anything else (convolutions, group norm, a FedProx term) goes through Opacus. Noise and
scaling are Opacus' own (``_generate_noise``, ``std = sigma * C``, division by the
expected batch size), from the same generator, so for the same batches and noise
generator the two give the same update (tested to 1e-6).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["BookKeepingDpSgd", "supports"]

#: Layers without parameters that may sit between the linear layers.
_PARAMETER_FREE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SiLU,
                   nn.Identity, nn.Flatten, nn.Dropout)


def supports(model: nn.Module) -> bool:
    """Whether book-keeping clipping applies to ``model``.

    True when every parameter belongs to an ``nn.Linear`` and every other leaf module is a
    known parameter-free layer.
    """
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue  # a container: its leaves decide
        if isinstance(module, nn.Linear):
            continue
        if not isinstance(module, _PARAMETER_FREE) or any(True for _ in
                                                          module.parameters(recurse=False)):
            return False
    linear_params = {id(p) for m in model.modules() if isinstance(m, nn.Linear)
                     for p in m.parameters(recurse=False)}
    return bool(linear_params) and all(id(p) in linear_params for p in model.parameters())


class BookKeepingDpSgd:
    """DP-SGD steps for a model that :func:`supports` accepts.

    Parameters
    ----------
    model : nn.Module
        Trained in place; its parameters are the optimizer's.
    optimizer : torch.optim.Optimizer
        The plain optimizer (SGD, momentum...) that takes the noised mean gradient.
    noise_multiplier, max_grad_norm : float
        sigma and C: each step adds N(0, (sigma C)^2) to every coordinate of the clipped sum.
    expected_batch_size : int
        The divisor of the noised sum (Opacus: ``int(n * q)``), fixed whatever the
        Poisson batch's size, as the accounting assumes.
    noise_generator : torch.Generator
        Source of the Gaussian noise.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 noise_multiplier: float, max_grad_norm: float, expected_batch_size: int,
                 noise_generator: torch.Generator | None) -> None:
        if not supports(model):
            raise ValueError("book-keeping clipping takes only linear layers with "
                             "parameter-free layers between them")
        if not max_grad_norm > 0 or not noise_multiplier >= 0 or expected_batch_size < 1:
            raise ValueError(f"need C > 0, sigma >= 0, expected batch >= 1; got C="
                             f"{max_grad_norm}, sigma={noise_multiplier}, "
                             f"batch={expected_batch_size}")
        self.model, self.optimizer = model, optimizer
        self.sigma, self.clip = float(noise_multiplier), float(max_grad_norm)
        self.expected_batch_size = int(expected_batch_size)
        self.generator = noise_generator
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self._acts: dict[int, torch.Tensor] = {}
        self._errs: dict[int, torch.Tensor] = {}
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        if {id(p) for p in self._params} != {id(p) for p in model.parameters()}:
            raise ValueError("the optimizer must hold exactly the model's parameters")
        self._owner = {id(p): (index, name) for index, layer in enumerate(self.layers)
                       for name, p in (("weight", layer.weight), ("bias", layer.bias))
                       if p is not None}

    def _hooks(self) -> Iterator[Any]:
        for index, layer in enumerate(self.layers):
            def forward_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...],
                             output: torch.Tensor, index: int = index) -> None:
                if index in self._acts:
                    raise RuntimeError("a linear layer ran twice in one forward pass; "
                                       "book-keeping clipping needs each once")
                (a,) = inputs
                if a.dim() != 2:
                    raise RuntimeError(f"book-keeping clipping takes (batch, features) "
                                       f"inputs to linear layers, got shape {tuple(a.shape)}")
                self._acts[index] = a.detach()
                output.register_hook(lambda e, index=index: self._errs.__setitem__(
                    index, e.detach()))
            yield layer.register_forward_hook(forward_hook)

    def step(self, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> torch.Tensor:
        """One DP-SGD step on the batch ``(x, y)`` (possibly empty); returns the summed loss.

        ``criterion`` must return per-example losses summed over the batch
        (``reduction="sum"``), so that each captured output gradient is one example's.
        """
        self._acts.clear()
        self._errs.clear()
        batch = len(x)
        loss = torch.zeros((), device=x.device)
        if batch:
            handles = list(self._hooks())
            flags = [p.requires_grad for p in self._params]
            try:
                for p in self._params:  # no unclipped parameter gradients: they'd be waste
                    p.requires_grad_(False)
                x_in = x.detach().requires_grad_(True)  # so the graph reaches every layer
                loss = criterion(self.model(x_in), y)
                loss.backward()
            finally:
                for p, flag in zip(self._params, flags, strict=True):
                    p.requires_grad_(flag)
                for handle in handles:
                    handle.remove()
            norms2 = torch.zeros(batch, dtype=torch.float32, device=x.device)
            for index, layer in enumerate(self.layers):
                a, e = self._acts[index], self._errs[index]
                e2 = (e * e).sum(dim=1)
                norms2 = norms2 + e2 * (a * a).sum(dim=1)
                if layer.bias is not None:
                    norms2 = norms2 + e2
            factor = (self.clip / (norms2.sqrt() + 1e-6)).clamp(max=1.0)
        for p in self._params:  # the optimizer's order: Opacus draws the noise in it
            index, name = self._owner[id(p)]
            if batch:
                ce = factor[:, None] * self._errs[index]
                summed = ce.t() @ self._acts[index] if name == "weight" else ce.sum(dim=0)
            else:  # an empty Poisson batch: a noise-only step
                summed = torch.zeros_like(p)
            p.grad = self._noised(summed).view_as(p) / self.expected_batch_size
        self.optimizer.step()
        self._acts.clear()
        self._errs.clear()
        return loss.detach()

    def _noised(self, summed: torch.Tensor) -> torch.Tensor:
        from opacus.optimizers.optimizer import _generate_noise

        return summed + _generate_noise(std=self.sigma * self.clip, reference=summed,
                                        generator=self.generator, secure_mode=False)
