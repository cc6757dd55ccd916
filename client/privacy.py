"""The client's side of differential privacy: DP-SGD, update clipping, its own ledger.

A device owner must not have to trust the server's bookkeeping, so every client keeps
its own hash-chained ledger (:class:`fedpriv.privacy.PrivacyLedger`), accounts its own
epsilon from it, and refuses a round that would take it past its own budget.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fedpriv.config import DpMode, Model, RunConfig
from fedpriv.tasks import ArrayDataset, task_criterion, to_loader
from fedpriv.tasks.optim import Sgd, StepOptimizer
from fedpriv.tasks.training import proximal_term

if TYPE_CHECKING:  # the accountant (dp-accounting, scipy) loads only under a DP mode
    from fedpriv.privacy import DpEvent, DpSgdEvent, PrivacyLedger

__all__ = [
    "LEDGER_PATH_KEY",
    "budget_refusal",
    "client_budget",
    "client_ledger",
    "dp_sgd_train",
    "event_json",
    "planned_event",
    "privacy_generator",
    "user_update",
]

#: Node-config key naming the client's ledger file (deployment). In simulation the
#: ledger lives under the run directory: ``RUN_DIR/clients/<client-id>/ledger.sqlite``.
LEDGER_PATH_KEY = "ledger-path"


def client_ledger(cfg: RunConfig, node_config: Mapping[str, Any], client_id: str,
                  run_id: str, signer: bytes | None = None) -> PrivacyLedger:
    """Open (or create) this client's own ledger (``signer``: its identity public key)."""
    path = str(node_config.get(LEDGER_PATH_KEY, "") or "")
    if not path:
        if not cfg.deployment.run_dir:
            raise ValueError(
                f"no ledger path: set the node config key {LEDGER_PATH_KEY!r} "
                "(or run-dir in simulation)"
            )
        path = str(Path(cfg.deployment.run_dir) / "clients" / client_id / "ledger.sqlite")
    # A device's own ledger (node config) spans every run it takes part in: its budget is
    # the device's lifetime budget, and each entry records the run it came from.
    from fedpriv.privacy import PrivacyLedger

    device = bool(node_config.get(LEDGER_PATH_KEY, ""))
    return PrivacyLedger.open_or_create(path, run_id=str(run_id), scope=client_id,
                                        delta=cfg.privacy.delta, max_epsilon=client_budget(cfg),
                                        signer=signer, multi_run=device)


def replay_dir(cfg: RunConfig, node_config: Mapping[str, Any]) -> Path | None:
    """Where this client keeps its last release for a replay (:mod:`client.replay`).

    A device (a ledger path in its node config): next to its ledger, on the device
    (``None``). A simulated client: a private state directory outside the run directory
    (:func:`fedpriv.durable.private_dir`), never in it: the copy is what the client
    released before the server's noise or masking.
    """
    if str(node_config.get(LEDGER_PATH_KEY, "") or "") or not cfg.deployment.run_dir:
        return None
    from fedpriv.durable import private_dir

    return private_dir(cfg.deployment.run_dir, "replay")


def client_budget(cfg: RunConfig) -> float:
    """The epsilon this client refuses to exceed.

    Its own ``client-max-epsilon`` and, at record level, also the federation's
    ``max-epsilon``: the federation's record-level epsilon is the largest client's, so
    each client enforcing it before every round (round 1 included) keeps the federation
    within budget without the server knowing any client's data size.
    """
    if cfg.privacy.dp_mode is DpMode.RECORD:
        return min(cfg.privacy.client_max_epsilon, cfg.privacy.max_epsilon)
    return cfg.privacy.client_max_epsilon


def privacy_generator(cfg: RunConfig, device: torch.device | str, *stream: int
                      ) -> torch.Generator:
    """A generator for a client's training randomness (sampling, shuffling, noise).

    Under any DP mode it is seeded from ``os.urandom`` (never from the run's seed, the
    round or anything the server sends), so that the sampling and noise are secret from
    whoever sees the update, which amplification by sampling and the Gaussian mechanism
    assume. Without DP (no claim to protect) or with ``reproducible = true`` (research)
    it is derived from the run's seed and ``stream``, so runs reproduce.
    """
    if cfg.training.reproducible or cfg.privacy.dp_mode is DpMode.NONE:
        seed = int(np.random.SeedSequence([cfg.training.seed, *stream]).generate_state(1)[0])
    else:
        seed = int.from_bytes(os.urandom(8), "little")
    return torch.Generator(device=device).manual_seed(seed)


def planned_event(cfg: RunConfig, n_local: int, round_clip: float) -> DpEvent:
    """The DP event this client's participation in one round amounts to.

    Record level: DP-SGD's (sigma, q, steps, C). User level: the server's noisy sum with
    multiplier z and this round's clip C, accounted by the client *without* sampling
    amplification (q = 1) since a client cannot verify the server's sampling.
    Record-central: one DP-SGD step (sigma, q = record-sampling-rate, C) with the noise
    the server adds, which the client cannot verify (as at user level); its own
    sampling it does itself, so q is counted.
    Distributed: the secure sum of the fewest survivors its noise is sized for (n_min
    shares, q = 1), from the plan the client derives itself
    (:func:`fedpriv.ddp_plan.distributed_plan`): the client itself refuses to reveal
    its masks for a survivor set smaller than secure aggregation's minimum, so no
    unmasked sum holds fewer shares while its peers follow the protocol.
    """
    from fedpriv.ddp_plan import distributed_plan, model_dimension
    from fedpriv.dp_plan import central_record_event, record_noise_multiplier, record_shape
    from fedpriv.privacy import DpSgdEvent, GaussianSumEvent

    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        plan = distributed_plan(cfg, model_dimension(cfg))
        return plan.event(plan.min_clients)
    if cfg.privacy.dp_mode is DpMode.RECORD_CENTRAL:
        return central_record_event(cfg)
    if cfg.privacy.dp_mode is DpMode.RECORD:
        q, steps = record_shape(cfg, n_local)
        return DpSgdEvent(noise_multiplier=record_noise_multiplier(cfg, n_local),
                          sampling_rate=q, steps=steps, clip=cfg.privacy.clip_norm)
    if cfg.privacy.dp_mode is DpMode.USER:
        return GaussianSumEvent(noise_multiplier=cfg.privacy.noise_multiplier, sampling_rate=1.0,
                                clip=round_clip)
    raise ValueError(f"dp-mode must be record, record-central, user or distributed for a "
                     f"DP event, got "
                     f"{cfg.privacy.dp_mode}")


def budget_refusal(ledger: PrivacyLedger, event: DpEvent, cfg: RunConfig | None = None
                   ) -> str:
    """Why this round would exceed the client's budget, or ``""`` if it fits.

    The budget is the ledger's (fixed when it was created) or, if lower, what ``cfg``
    asks now (:func:`client_budget`); the check is a dry run before any data is touched.
    """
    from fedpriv.privacy import epsilon, projected_epsilon

    spent = [ev for _, ev in ledger.events()]
    budget = ledger.max_epsilon
    label = "its budget"
    if cfg is not None and client_budget(cfg) < budget:
        budget = client_budget(cfg)
    if (cfg is not None and cfg.privacy.dp_mode is DpMode.RECORD
            and budget == cfg.privacy.max_epsilon):
        label = "max-epsilon"
    elif cfg is not None and budget == cfg.privacy.client_max_epsilon:
        label = "client-max-epsilon"
    if math.isinf(budget):
        return ""
    projected = projected_epsilon(spent, event, ledger.delta)
    if projected > budget:
        return (f"this round would raise its epsilon from "
                f"{epsilon(spent, ledger.delta):.3f} to {projected:.3f} > {label} "
                f"{budget:g} (delta {ledger.delta:g})")
    return ""


def dp_sgd_train(model: nn.Module, data: ArrayDataset, cfg: RunConfig, *,
                 event: DpSgdEvent, device: torch.device, sampling: torch.Generator,
                 noise: torch.Generator, proximal_mu: float = 0.0) -> float:
    """Run ``event.steps`` steps of DP-SGD with Opacus and return the mean training loss.

    Abadi et al. 2016, Algorithm 1: Poisson sampling with rate q, per-example clipping to
    C, Gaussian noise sigma*C. ``sampling`` drives Opacus' Poisson sampler and ``noise``
    its Gaussian noise; both come from :func:`privacy_generator` (OS entropy), never from
    the run's seed, which the server knows. Opacus' ``secure_mode`` would need
    torchcsprng, which has no build for this torch. The loader has ``ceil(n / B)``
    batches, so Opacus samples at ``q = 1 / ceil(n / B)``, the rate in ``event``; a step
    whose Poisson batch is empty is a noise-only step, accounted like any other.
    The training loss returned is for local logging only: it is not sent to the server.
    Opacus' ghost clipping (fast gradient clipping; Li et al. 2022, Bu et al. 2023)
    computes per-example gradient norms without materialising per-example gradients;
    ``ghost-clipping = false`` (or a FedProx term, which ghost clipping cannot take)
    uses the standard per-example hooks. Opacus' own accountant is not used: epsilon
    comes from the ledger, once per round.

    A model that :func:`client.bookkeeping.supports` covers (linear, convolution and
    group norm layers: every shipped classifier) without a FedProx term takes
    :class:`client.bookkeeping.BookKeepingDpSgd` instead: the same sampler, clip, noise
    and scaling, the clipped sum formed in one backward pass (Bu et al. 2023); tested
    equal to Opacus' update to 1e-6. Opacus' hooks or ghost clipping remain for the rest.

    Only parameters that require gradients are trained, clipped and noised: for
    ``model = lm-lora`` the LoRA adapters (Yu et al. 2022, Section 3), with Opacus'
    per-example hooks on the adapters' linear layers alone (the frozen base gets no
    hooks and no per-example gradients); its loss is each example's mean token NLL
    (:class:`fedpriv.tasks.SequenceNll`), a mean over examples as the hooks assume.
    """
    from client.bookkeeping import supports

    ghost = (cfg.privacy.ghost_clipping and proximal_mu == 0.0
             and cfg.resolved_model is not Model.LM_LORA)
    trainable = [p for p in model.parameters() if p.requires_grad]
    global_params = [p.detach().clone() for p in trainable] if proximal_mu else None
    loader = to_loader(data, cfg.training.batch_size, shuffle=True, generator=sampling)
    if (proximal_mu == 0.0 and cfg.resolved_model is not Model.LM_LORA
            and len(trainable) == len(list(model.parameters())) and supports(model)):
        # torch.optim's update without importing torch._dynamo (fedpriv.tasks.optim)
        sgd = Sgd(trainable, lr=cfg.training.lr, momentum=cfg.training.momentum)
        return _bookkeeping_steps(model, sgd, loader, event, device, noise)
    from opacus import PrivacyEngine  # only off the book-keeping path (see its module)

    optimizer = torch.optim.SGD(trainable, lr=cfg.training.lr, momentum=cfg.training.momentum)

    criterion = task_criterion(cfg)
    model.train()  # Opacus validates a model in training mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secure_mode and RNG notices
        engine = PrivacyEngine(accountant="rdp")
        made = engine.make_private(
            module=model, optimizer=optimizer, criterion=criterion, data_loader=loader,
            noise_multiplier=event.noise_multiplier, max_grad_norm=event.clip,
            poisson_sampling=True, noise_generator=noise,
            grad_sample_mode="ghost" if ghost else "hooks",
        )
    if ghost:
        dp_model, dp_opt, dp_criterion, dp_loader = made
    else:
        dp_model, dp_opt, dp_loader = made
        dp_criterion = criterion
    _check_rate(dp_loader.sample_rate, event)
    dp_model.train()
    with warnings.catch_warnings():
        # Opacus' ghost clipping trips torch's full-backward-hook notice on every step.
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        return _dp_steps(dp_model, dp_opt, dp_criterion, dp_loader, model, event.steps,
                         device, global_params, proximal_mu)


def _bookkeeping_steps(model: nn.Module, optimizer: StepOptimizer, loader: Any,
                       event: DpSgdEvent, device: torch.device,
                       noise: torch.Generator) -> float:
    """``event.steps`` DP-SGD steps by book-keeping clipping over Poisson batches.

    The batches are drawn as Opacus' ``DPDataLoader`` draws them, without importing Opacus.
    """
    from client.bookkeeping import BookKeepingDpSgd, poisson_loader

    dp_loader = poisson_loader(loader)  # the loader's own generator samples
    _check_rate(dp_loader.sample_rate, event)
    dp = BookKeepingDpSgd(model, optimizer, noise_multiplier=event.noise_multiplier,
                          max_grad_norm=event.clip, noise_generator=noise,
                          expected_batch_size=int(len(loader.dataset) * dp_loader.sample_rate))
    criterion = nn.CrossEntropyLoss(reduction="sum")
    model.train()
    total, count = 0.0, 0
    with dp:
        for xb, yb in _batches(dp_loader, event.steps):
            total += float(dp.step(xb.to(device), yb.to(device), criterion))
            count += len(yb)
    return total / count if count else float("nan")


def _check_rate(sample_rate: float, event: DpSgdEvent) -> None:
    """The sampler must draw at the rate the ledger records, or the epsilon is wrong."""
    if abs(sample_rate - event.sampling_rate) > 1e-12:
        raise RuntimeError(f"Opacus samples at q={sample_rate!r}, the event records "
                           f"q={event.sampling_rate!r}")


def _batches(dp_loader: Any, n_steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Exactly ``n_steps`` Poisson batches (empty ones included), over as many passes."""
    steps = 0
    while steps < n_steps:
        for batch in dp_loader:
            if steps >= n_steps:
                return
            steps += 1
            yield batch


def _dp_steps(dp_model: nn.Module, dp_opt: Any, dp_criterion: Any, dp_loader: Any,
              model: nn.Module, n_steps: int, device: torch.device,
              global_params: list[torch.Tensor] | None, proximal_mu: float) -> float:
    total, count = 0.0, 0
    for xb, yb in _batches(dp_loader, n_steps):
        xb, yb = xb.to(device), yb.to(device)
        dp_opt.zero_grad(set_to_none=True)
        # An empty Poisson batch still goes through forward and backward: Opacus then
        # sums no per-example gradient and adds the noise, a noise-only step as the
        # accountant assumes. (Calling step() without backward would skip the noise
        # with hooks and crash with ghost clipping.)
        loss = dp_criterion(dp_model(xb), yb)
        if global_params is not None:
            loss = loss + proximal_term(model, global_params, proximal_mu)
        loss.backward()
        _drop_non_finite_examples(dp_opt)
        dp_opt.step()
        if len(yb):
            total += float(loss.detach()) * len(yb)
            count += len(yb)
    return total / count if count else float("nan")


def _drop_non_finite_examples(dp_opt: Any) -> None:
    """Opacus' per-example hooks: an example whose gradient is not finite adds nothing.

    Its clip factor would be NaN and so would the whole noised sum, the model and the
    client's release: one example could make its client withdraw the round, a release no
    clip bounds. Book-keeping clipping does the same (:mod:`client.bookkeeping`). Ghost
    clipping keeps no per-example gradients and is left as it is.
    """
    samples = [gs for p in getattr(dp_opt, "params", [])
               if isinstance(gs := getattr(p, "grad_sample", None), torch.Tensor)]
    bad: torch.Tensor | None = None
    for gs in samples:
        rows = ~torch.isfinite(gs.reshape(gs.shape[0], -1)).all(dim=1)
        bad = rows if bad is None else bad | rows
    if bad is not None and bool(bad.any()):
        for gs in samples:
            gs[bad] = 0


def user_update(local: Mapping[str, torch.Tensor], global_: Mapping[str, torch.Tensor],
                clip: float) -> tuple[dict[str, np.ndarray], bool]:
    """Delta = w_local - w_global clipped to norm C (McMahan et al. 2018, Algorithm 1).

    Returns the clipped update and b = 1[||Delta|| <= C] for adaptive clipping.
    """
    from fedpriv.privacy import clip_by_l2

    keys = list(global_.keys())
    delta = [local[k].detach().cpu().numpy().astype(np.float32)
             - global_[k].detach().cpu().numpy().astype(np.float32) for k in keys]
    clipped, _, unclipped = clip_by_l2(delta, clip)
    return dict(zip(keys, clipped, strict=True)), unclipped


def event_json(event: DpEvent) -> str:
    """The event as compact JSON (it travels in the reply's PRIVACY record)."""
    return json.dumps(event.to_dict(), sort_keys=True)


def central_gradient_sum(model: nn.Module, data: ArrayDataset, cfg: RunConfig, *,
                         device: torch.device, sampling: torch.Generator
                         ) -> tuple[dict[str, np.ndarray], float, int]:
    """``dp-mode = record-central``: this client's part of one centralised DP-SGD step.

    Abadi et al. 2016, Algorithm 1, lines "take a random sample" and "clip gradient",
    with the federation's examples as the data set: each local example joins the round's
    sample independently with probability ``q = record-sampling-rate`` (``sampling``,
    OS entropy: the server never learns which), its gradient at the received model is
    clipped to C (book-keeping clipping, :class:`client.bookkeeping.BookKeepingDpSgd`),
    and the clipped gradients are summed. No noise: the server adds N(0, sigma^2 C^2)
    once to the sum over all clients, divides by the expected batch and steps, so the
    round is exactly one step of centralised DP-SGD.

    Returns
    -------
    tuple of (dict, float, int)
        ``-sum_i clip_C(g_i)`` per state-dict key (zeros for what is not trained: the
        server's step adds it to the model), the mean training loss of the sample (kept
        on the device) and the number of examples drawn.

    Raises
    ------
    ValueError
        For a model that book-keeping clipping does not cover.
    """
    from client.bookkeeping import BookKeepingDpSgd, supports

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not supports(model) or len(trainable) != len(list(model.parameters())):
        raise ValueError("dp-mode=record-central needs a model that book-keeping clipping "
                         "covers (linear, convolution and group norm layers, all trained); "
                         f"model={cfg.resolved_model.value} is not one")
    q = cfg.privacy.record_sampling_rate
    n = len(data)
    # float64 uniforms: P[u < q] is q to 2^-53 (float32's grid would be off by up to 2^-24)
    chosen = (torch.rand(n, generator=sampling, dtype=torch.float64) < q
              ).nonzero().reshape(-1).numpy()
    optimizer = Sgd(trainable, lr=0.0)  # holds the parameters; never steps
    dp = BookKeepingDpSgd(model, optimizer, noise_multiplier=0.0,
                          max_grad_norm=cfg.privacy.clip_norm, expected_batch_size=1,
                          noise_generator=None)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    sums = [torch.zeros_like(p) for p in trainable]
    loss = 0.0
    model.train()
    with dp:
        for start in range(0, len(chosen), _CHUNK):  # memory: per-layer activations
            idx = chosen[start:start + _CHUNK]
            xb = torch.as_tensor(data.x[idx]).to(device)
            yb = torch.as_tensor(data.y[idx]).to(device)
            part, part_loss = dp.clipped_sum(xb, yb, criterion)
            for acc, g in zip(sums, part, strict=True):
                acc.add_(g)
            loss += float(part_loss)
    names = {id(p): name for name, p in model.named_parameters()}
    grads = {names[id(p)]: g for p, g in zip(trainable, sums, strict=True)}
    update = {k: (-grads[k] if k in grads else torch.zeros_like(v)).detach().to("cpu").numpy()
              for k, v in model.state_dict().items()}
    return update, (loss / len(chosen) if len(chosen) else float("nan")), len(chosen)


#: Examples per book-keeping pass in :func:`central_gradient_sum` (bounds its memory).
_CHUNK = 4096
