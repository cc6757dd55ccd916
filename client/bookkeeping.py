"""Exact per-example clipping in one backward pass (linear, convolution, group norm).

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

One backward pass yields every ``e_i`` (autograd is asked for the layers' outputs'
gradients, which forward hooks keep) while it is told not to form the parameters' own
(unclipped) gradients, which would be thrown away; the noise is added inside the same
``addmm``/``addmv`` that forms each clipped sum. Opacus' hooks instead build a
``(B, out, in)`` per-example gradient for every layer, and its ghost clipping runs a
second backward (see ``bench/suites/dpsgd.py`` for the measured ratios).

Convolutions (one group) and group norm take the same single backward pass. A
convolution's per-example weight gradient is formed, by one batched product of the
output gradients and the input patches, or, where that is dearer, only its norm is
taken, by the ghost norm over output positions, and its clipped sum by one product over
the whole batch (the mixed ghost clipping of Bu et al. 2023); group norm's is a sum over
positions. What this covers is deliberately narrow: every parameter must belong to such a
layer, applied once per forward, with parameter-free layers (activations, pooling,
flatten; none in place) in between.
:func:`supports` says whether a model qualifies; anything else (a FedProx term, other
layers) goes through Opacus. Noise and scaling are Opacus' (``std = sigma * C``, one
``torch.normal`` draw per parameter tensor as Opacus' ``_generate_noise`` makes it,
division by the expected batch size), from the same generator, so for the same batches
and noise generator the two give the same update (tested to 1e-6).

:func:`poisson_loader` is the Poisson sampler of the Sampled Gaussian Mechanism (each
example independently with probability q; Mironov, Talwar & Zhang 2019), drawing what
Opacus' ``DPDataLoader`` draws from the same generator (tested). The two are written here
so that a device training a covered model never imports Opacus (~50 MB resident and ~2
CPU-seconds per process, which a deployed SuperNode pays per message; see
``bench/suites/edge.py``); Opacus remains the path for everything else and the
reference the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from fedpriv.tasks.optim import StepOptimizer
from fedpriv.tasks.scattering import Scattering2D

__all__ = ["BookKeepingDpSgd", "gaussian_noise", "poisson_loader", "supports"]

#: Layers without parameters that may sit between the linear layers: each maps one
#: example to one example (never batch norm, which mixes a batch). ``Scattering2D`` is
#: the fixed scattering transform of ``model = scatternet``.
_PARAMETER_FREE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SiLU,
                   nn.Identity, nn.Flatten, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
                   Scattering2D)


def _parameter_free(module: nn.Module) -> bool:
    """A per-example layer without parameters (group norm without affine counts).

    Not one that works in place (``inplace=True``): it would overwrite the output of the
    layer before it, whose gradient the clipping needs.
    """
    if isinstance(module, nn.GroupNorm):
        return not module.affine
    return isinstance(module, _PARAMETER_FREE) and not getattr(module, "inplace", False)


def _covered(module: nn.Module) -> bool:
    """A layer whose per-example gradients this module forms."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return (module.groups == 1 and module.padding_mode == "zeros"
                and not isinstance(module.padding, str))
    return isinstance(module, nn.GroupNorm) and module.affine


def supports(model: nn.Module) -> bool:
    """Whether book-keeping clipping applies to ``model``.

    True when every parameter belongs to an ``nn.Linear``, an ``nn.Conv2d`` (one group,
    zero padding given as numbers) or an affine ``nn.GroupNorm``, and every other leaf
    module is a known parameter-free per-example layer (activations, pooling, flatten,
    dropout, group norm without affine, the scattering transform).
    """
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue  # a container: its leaves decide
        if _covered(module):
            continue
        if not _parameter_free(module) or any(True for _ in module.parameters(recurse=False)):
            return False
    covered = {id(p) for m in model.modules() if _covered(m)
               for p in m.parameters(recurse=False)}
    return bool(covered) and all(id(p) in covered for p in model.parameters())


class BookKeepingDpSgd:
    """DP-SGD steps for a model that :func:`supports` accepts.

    Parameters
    ----------
    model : nn.Module
        Trained in place; its parameters are the optimizer's.
    optimizer : StepOptimizer
        The plain optimizer (``torch.optim.SGD`` or :class:`fedpriv.tasks.optim.Sgd`) that
        takes the noised mean gradient.
    noise_multiplier, max_grad_norm : float
        sigma and C: each step adds N(0, (sigma C)^2) to every coordinate of the clipped sum.
    expected_batch_size : int
        The divisor of the noised sum (Opacus: ``int(n * q)``), fixed whatever the
        Poisson batch's size, as the accounting assumes.
    noise_generator : torch.Generator
        Source of the Gaussian noise.
    """

    def __init__(self, model: nn.Module, optimizer: StepOptimizer, *,
                 noise_multiplier: float, max_grad_norm: float, expected_batch_size: int,
                 noise_generator: torch.Generator | None) -> None:
        if not supports(model):
            raise ValueError("book-keeping clipping takes linear, convolutional and group "
                             "norm layers with parameter-free layers between them")
        if not max_grad_norm > 0 or not noise_multiplier >= 0 or expected_batch_size < 1:
            raise ValueError(f"need C > 0, sigma >= 0, expected batch >= 1; got C="
                             f"{max_grad_norm}, sigma={noise_multiplier}, "
                             f"batch={expected_batch_size}")
        self.model, self.optimizer = model, optimizer
        self.sigma, self.clip = float(noise_multiplier), float(max_grad_norm)
        self.expected_batch_size = int(expected_batch_size)
        self.generator = noise_generator
        self.layers = [m for m in model.modules() if _covered(m)]
        self._acts: dict[int, torch.Tensor] = {}
        self._outs: dict[int, tuple[torch.Tensor, int]] = {}
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        if {id(p) for p in self._params} != {id(p) for p in model.parameters()}:
            raise ValueError("the optimizer must hold exactly the model's parameters")
        self._owner = {id(p): (index, name) for index, layer in enumerate(self.layers)
                       for name, p in (("weight", layer.weight), ("bias", layer.bias))
                       if p is not None}
        self._handles: list[Any] | None = None
        self._flags: list[bool] = []

    def __enter__(self) -> BookKeepingDpSgd:
        """Keep the hooks on, and parameter gradients off, for many steps (saves ~10%)."""
        self._attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self._detach()

    def _attach(self) -> None:
        if self._handles is None:
            self._flags = [p.requires_grad for p in self._params]
            for p in self._params:  # no unclipped parameter gradients: they'd be waste
                p.requires_grad_(False)
            self._handles = list(self._hooks())

    def _detach(self) -> None:
        if self._handles is not None:
            for handle in self._handles:
                handle.remove()
            for p, flag in zip(self._params, self._flags, strict=True):
                p.requires_grad_(flag)
            self._handles = None

    def _hooks(self) -> Iterator[Any]:
        for index, layer in enumerate(self.layers):
            def forward_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...],
                             output: torch.Tensor, index: int = index) -> None:
                if index in self._acts:
                    raise RuntimeError("a layer ran twice in one forward pass; "
                                       "book-keeping clipping needs each once")
                (a,) = inputs
                if isinstance(module, nn.Linear) and a.dim() != 2:
                    raise RuntimeError(f"book-keeping clipping takes (batch, features) "
                                       f"inputs to linear layers, got shape {tuple(a.shape)}")
                self._acts[index] = a.detach()
                self._outs[index] = (output, output._version)
            yield layer.register_forward_hook(forward_hook)

    def _output_gradients(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """Each covered layer's ``e = dL/dy`` from one backward pass (no parameter's).

        Asking autograd for the outputs' gradients alone (rather than hooking them during
        ``loss.backward()``) lets it skip the input's gradient below the first layer.
        """
        outs = []
        for index, layer in enumerate(self.layers):
            if index not in self._outs:
                raise RuntimeError(f"book-keeping clipping needs every covered layer in the "
                                   f"forward pass; {type(layer).__name__} #{index} did not run")
            out, version = self._outs[index]
            if out._version != version:  # its gradient would be the modified tensor's
                raise RuntimeError(f"{type(layer).__name__} #{index}'s output was modified "
                                   f"in place (an inplace activation?); book-keeping "
                                   f"clipping needs it as the layer returned it")
            outs.append(out)
        grads = torch.autograd.grad(loss, outs, allow_unused=True)
        return [torch.zeros_like(out) if g is None else g
                for out, g in zip(outs, grads, strict=True)]

    def _per_layer(self, errs: list[torch.Tensor]) -> tuple[list[Any], torch.Tensor]:
        """Each layer's (squared norms, sum former) and the examples' squared norms."""
        per_layer = [_per_example(layer, self._acts[i], errs[i])
                     for i, layer in enumerate(self.layers)]
        norms2 = per_layer[0][0]
        for sq, _ in per_layer[1:]:
            norms2 = norms2 + sq
        return per_layer, norms2

    def step(self, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> torch.Tensor:
        """One DP-SGD step on the batch ``(x, y)`` (possibly empty); returns the summed loss.

        ``criterion`` must return per-example losses summed over the batch
        (``reduction="sum"``), so that each output gradient is one example's.
        """
        sums, loss = self._noised_sums(x, y, criterion, self.sigma * self.clip)
        for p, total in zip(self._params, sums, strict=True):
            # divided as Opacus divides (an empty Poisson batch: a noise-only step)
            p.grad = total.div_(self.expected_batch_size)
        self.optimizer.step()
        return loss

    def clipped_sum(self, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module
                    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``sum_i clip_C(g_i)`` for each parameter (the optimizer's order), and the loss.

        No noise, no division and no step: what a client adds to a sum that someone else
        noises (``dp-mode = record-central``). Each example's gradient over all the
        parameters is scaled to norm at most C, exactly as :meth:`step` scales it.
        """
        return self._noised_sums(x, y, criterion, 0.0)

    def _noised_sums(self, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module,
                     std: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``N(0, std^2) + sum_i c_i g_i`` per parameter, and the summed loss."""
        self._acts.clear()
        self._outs.clear()
        batch = len(x)
        loss = torch.zeros((), device=x.device)
        if batch:
            attached_here = self._handles is None
            self._attach()
            try:
                x_in = x.detach().requires_grad_(True)  # so the graph reaches every layer
                loss = criterion(self.model(x_in), y)
                errs = self._output_gradients(loss)
            finally:
                if attached_here:
                    self._detach()
            per_layer, norms2 = self._per_layer(errs)
            # one reduction when every norm is finite (the sum of finite squares overflows
            # only past ~1e38, and then the exact test below finds nothing to drop)
            bad = None if math.isfinite(float(norms2.sum())) else ~torch.isfinite(norms2)
            if bad is not None and bool(bad.any()):
                # An example whose gradient is not finite (an overflowing input) adds
                # nothing, rather than turning the whole sum into NaN: otherwise one
                # example could make its client withdraw the round, a release whose
                # sensitivity no clip bounds.
                for i in range(len(self.layers)):
                    self._acts[i] = _zero_rows(self._acts[i], bad)
                    errs[i] = _zero_rows(errs[i], bad)
                per_layer, norms2 = self._per_layer(errs)
            factor = (self.clip / (norms2.sqrt() + 1e-6)).clamp(max=1.0)
        sums = []
        for p in self._params:  # the optimizer's order: Opacus draws the noise in it
            index, name = self._owner[id(p)]
            noise = gaussian_noise(std=std, reference=p, generator=self.generator)
            if noise.dtype != p.dtype:  # drawn in float32 as Opacus draws it
                noise = noise.to(p.dtype)
            if batch:  # noise + sum_i c_i g_i, in one fused product
                noise = per_layer[index][1](factor, name, noise)
            sums.append(noise)
        self._acts.clear()
        self._outs.clear()
        return sums, loss.detach()


def _per_example(layer: nn.Module, a: torch.Tensor, e: torch.Tensor
                 ) -> tuple[torch.Tensor, Any]:
    """Per-example squared gradient norms of ``layer`` and a function giving its gradient.

    ``a`` is the layer's input, ``e`` the gradient at its output, both batch-first. The
    function maps the clip factors ``c``, a parameter name and that parameter's noise ``z``
    to ``z + sum_i c_i grad_i``, the noised sum of DP-SGD (Abadi et al. 2016, Algorithm 1),
    as one fused ``addmm``/``addmv``.
    """
    if isinstance(layer, nn.Linear):  # factored: no per-example gradient is formed
        a2 = torch.linalg.vecdot(a, a)
        sq = torch.linalg.vecdot(e, e) * (a2 + 1.0 if layer.bias is not None else a2)

        def linear_grad(c: torch.Tensor, name: str, z: torch.Tensor) -> torch.Tensor:
            if name == "bias":  # sum_i c_i e_i = E^T c
                return torch.addmv(z, e.t(), c)
            # (c * E)^T A = E^T (c * A): scale whichever of the two is narrower
            if e.shape[1] <= a.shape[1]:
                return torch.addmm(z, (e * c[:, None]).t(), a)
            return torch.addmm(z, e.t(), a * c[:, None])
        return sq, linear_grad
    if isinstance(layer, nn.Conv2d):
        return _conv_per_example(layer, a, e)
    # nn.GroupNorm: y = x_hat * w + b per channel; its per-example gradients are (B, C)
    assert isinstance(layer, nn.GroupNorm)
    x_hat = nn.functional.group_norm(a, layer.num_groups, eps=layer.eps)
    dims = tuple(range(2, a.dim()))
    return _formed({"weight": (x_hat * e).sum(dim=dims), "bias": e.sum(dim=dims)})


def _formed(grads: dict[str, torch.Tensor], sq: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, Any]:
    """Norms and noised clipped sums of per-example gradients held as ``(B, ...)`` tensors.

    ``sq``, when given, is the squared norm of gradients not in ``grads`` (a convolution's
    weight under the ghost norm), added to theirs.
    """
    for g in grads.values():
        flat = g.flatten(1)
        term = torch.linalg.vecdot(flat, flat)
        sq = term if sq is None else sq + term
    assert sq is not None

    def formed_grad(c: torch.Tensor, name: str, z: torch.Tensor) -> torch.Tensor:
        g = grads[name]
        return torch.addmv(z.flatten(), g.flatten(1).t(), c).view_as(z)
    return sq, formed_grad


def ghost_norm_pays(positions: int, out_channels: int, patch: int) -> bool:
    """Whether a convolution's weight norms are cheaper by the ghost norm than formed.

    The rule of mixed ghost clipping (Bu et al. 2023, Section 3.2, from Li et al. 2022):
    the ghost norm costs ~``2 T^2`` per example against ``p d`` for forming the gradient,
    with ``T`` output positions, ``p`` output channels and ``d`` the patch size.
    """
    return 2 * positions * positions < out_channels * patch


#: Patches (batch x positions) from which a one-channel convolution's are copied by kernel
#: offset (:func:`_patches`); measured break-even on the digits CNN's first layer.
_BY_OFFSET_PATCHES = 8192


def _patches(layer: nn.Conv2d, a: torch.Tensor, *, by_offset: bool = False) -> torch.Tensor:
    """The input patches each output position of ``layer`` sees, as ``(B, T, kh*kw*C)``.

    Positions ``T`` are row-major (as ``output.flatten(2)``); each patch is ordered kernel
    row, kernel column, channel: the channels-last order, in which the one copy out of a
    strided view of the padded input moves contiguous runs of ``C`` (~5x faster on CPU than
    the channel-first order or ``nn.functional.unfold``, which loops over the batch). The
    weight's own order is ``(C, kh, kw)``; :func:`_conv_per_example` maps between them.

    ``by_offset``: the same values, copied one kernel offset at a time (``kh * kw`` copies
    whose contiguous runs are output rows) into ``(B, kh*kw*C, T)`` and returned transposed
    (a view): for one input channel, where the channels-last copy moves single floats, it
    is ~3x faster (digits CNN, first layer, batch 1024: 0.41 ms against 1.35 ms).
    """
    padding = cast(tuple[int, int], layer.padding)  # supports() refused "same"/"valid"
    kh, kw = layer.kernel_size
    channels = a.shape[1]
    if by_offset and tuple(layer.dilation) == (1, 1):
        sh, sw = layer.stride
        padded = nn.functional.pad(a, (padding[1], padding[1], padding[0], padding[0]))
        batch, _, height, width = padded.shape
        rows, cols_ = (height - kh) // sh + 1, (width - kw) // sw + 1
        out = torch.empty(batch, kh, kw, channels, rows, cols_, dtype=a.dtype,
                          device=a.device)
        for i in range(kh):
            for j in range(kw):
                out[:, i, j] = padded[:, :, i:i + (rows - 1) * sh + 1:sh,
                                      j:j + (cols_ - 1) * sw + 1:sw]
        return out.view(batch, kh * kw * channels, rows * cols_).transpose(1, 2)
    if tuple(layer.dilation) != (1, 1):
        cols = nn.functional.unfold(a, layer.kernel_size, dilation=layer.dilation,
                                    padding=padding, stride=layer.stride)  # (B, C*kh*kw, T)
        return cols.view(len(a), channels, kh, kw, -1).permute(0, 4, 2, 3, 1).reshape(
            len(a), cols.shape[2], -1)
    sh, sw = layer.stride
    padded = nn.functional.pad(a, (padding[1], padding[1], padding[0], padding[0]))
    last = padded.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
    view = last.unfold(1, kh, sh).unfold(2, kw, sw)  # (B, Ho, Wo, C, kh, kw)
    batch, rows, cols_ = view.shape[:3]
    return view.permute(0, 1, 2, 4, 5, 3).reshape(batch, rows * cols_, kh * kw * channels)


def _conv_per_example(layer: nn.Conv2d, a: torch.Tensor, e: torch.Tensor
                      ) -> tuple[torch.Tensor, Any]:
    """A convolution's per-example norms and noised clipped sums.

    Example ``i``'s weight gradient is ``dW_i = sum_t e_{i,t} u_{i,t}^T`` over output
    positions ``t``, with ``u_{i,t}`` the input patch and ``e_{i,t}`` the output gradient
    there (Goodfellow 2015). Its squared norm is either formed from ``dW_i`` (one batched
    product) or, where :func:`ghost_norm_pays`, taken as the ghost norm
    ``sum_{t,t'} (u_t . u_t') (e_t . e_t')`` from two ``T x T`` Gram matrices (Li et al.
    2022, Section 4), and the clipped sum ``sum_i c_i dW_i`` is then one product over all
    examples and positions together (the book-keeping of Bu et al. 2023).
    """
    errs = e.flatten(2)  # (B, O, T)
    batch, out_channels, positions = errs.shape
    channels, (kh, kw) = a.shape[1], layer.kernel_size
    ghost = ghost_norm_pays(positions, out_channels, kh * kw * channels)
    # (B, T, D), D in (kh, kw, C) order; copied by kernel offset for one input channel
    # and many patches (the formed path only: the ghost path's flattening would copy a
    # transposed view). Below ~8192 patches the product on the transposed view costs more
    # than the copy saves (digits CNN: break-even at batch 128, 1.3% slower at 64, 4%
    # faster a step at 1024).
    patches = _patches(layer, a, by_offset=(channels == 1 and not ghost
                                            and batch * positions >= _BY_OFFSET_PATCHES))

    def noised(z: torch.Tensor, summed: Any) -> torch.Tensor:
        """``z + sum`` with ``z`` in the weight's order and the sum in the patches'."""
        z_last = z.permute(0, 2, 3, 1).reshape(out_channels, -1)
        return summed(z_last).view(out_channels, kh, kw, channels).permute(
            0, 3, 1, 2).contiguous()

    grads: dict[str, torch.Tensor] = {}
    if layer.bias is not None:
        grads["bias"] = errs.sum(dim=2)
    if not ghost:
        grads["weight"] = torch.bmm(errs, patches)  # (B, O, D)
        sq, formed_grad = _formed(grads)

        def formed_conv_grad(c: torch.Tensor, name: str, z: torch.Tensor) -> torch.Tensor:
            if name == "bias":
                return cast(torch.Tensor, formed_grad(c, name, z))
            return noised(z, lambda z_last: formed_grad(c, name, z_last))
        return sq, formed_conv_grad
    gram_u = torch.bmm(patches, patches.transpose(1, 2)).flatten(1)  # (B, T*T)
    gram_e = torch.bmm(errs.transpose(1, 2), errs).flatten(1)
    sq, bias_grad = _formed(grads, torch.linalg.vecdot(gram_u, gram_e))

    def conv_grad(c: torch.Tensor, name: str, z: torch.Tensor) -> torch.Tensor:
        if name == "bias":
            return cast(torch.Tensor, bias_grad(c, name, z))
        scaled = (errs * c[:, None, None]).transpose(0, 1).reshape(out_channels, -1)
        return noised(z, lambda z_last: torch.addmm(
            z_last, scaled, patches.reshape(batch * positions, -1)))
    return sq, conv_grad


def _zero_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t`` with the examples in ``rows`` (a boolean mask over dim 0) set to zero."""
    return torch.where(rows.view(-1, *([1] * (t.dim() - 1))), torch.zeros((), dtype=t.dtype,
                                                                          device=t.device), t)


def gaussian_noise(*, std: float, reference: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, std^2) noise shaped like ``reference``.

    The draw Opacus' ``_generate_noise`` makes outside its secure mode: one
    ``torch.normal`` call, or zeros, drawing nothing, when ``std == 0``.
    """
    if std == 0:
        return torch.zeros(reference.shape, device=reference.device, dtype=reference.dtype)
    return torch.normal(mean=0, std=std, size=reference.shape, device=reference.device,
                        generator=generator)


class _PoissonBatches(torch.utils.data.Sampler[list[int]]):
    """``steps`` batches, each example in each with probability ``rate``, independently."""

    def __init__(self, num_samples: int, rate: float, steps: int,
                 generator: torch.Generator | None) -> None:
        self.num_samples, self.rate, self.steps, self.generator = (num_samples, rate, steps,
                                                                    generator)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = torch.rand(self.num_samples, generator=self.generator) < self.rate
            yield mask.nonzero(as_tuple=False).reshape(-1).tolist()


class PoissonLoader(torch.utils.data.DataLoader):
    """A ``DataLoader`` over Poisson batches that knows its sampling rate."""

    sample_rate: float


def poisson_loader(loader: torch.utils.data.DataLoader) -> PoissonLoader:
    """``loader``'s dataset under Poisson sampling at rate ``1 / len(loader)``.

    The rate, the number of batches per pass (``int(1 / rate)``) and the draws from
    ``loader.generator`` are those of Opacus' ``DPDataLoader.from_data_loader(loader)``;
    an empty draw is an empty batch with the examples' shapes (the dataset must batch
    through ``__getitems__``, as ``fedpriv.tasks.to_loader``'s does). The result has a
    ``sample_rate`` attribute, as Opacus' loader has.
    """
    rate = 1 / len(loader)
    n = len(cast(Any, loader.dataset))
    if n <= 0:
        raise ValueError(f"Poisson sampling needs examples, got a dataset of {n}")
    if not callable(getattr(loader.dataset, "__getitems__", None)):
        raise TypeError("poisson_loader needs a dataset that batches through __getitems__")
    dp_loader = PoissonLoader(
        loader.dataset, batch_sampler=_PoissonBatches(n, rate, int(1 / rate), loader.generator),
        collate_fn=loader.collate_fn,
        # as Opacus' loader does: each pass's iterator then draws its base seed from the
        # sampling generator too, so the masks continue the same stream
        generator=loader.generator)
    dp_loader.sample_rate = rate
    return dp_loader
