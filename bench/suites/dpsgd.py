"""DP-SGD cost: client training throughput, non-private vs Opacus hooks vs ghost clipping
vs book-keeping clipping (``client.bookkeeping``, what the client uses for every shipped
model).

Same model, batch size and number of steps for all of them (fixed batches, no Poisson
sampling, so the work is identical); warm-up steps excluded. The ratio is DP-SGD's
throughput over non-private SGD's. Non-private and book-keeping steps take the client's
optimizer (:class:`fedpriv.tasks.optim.Sgd`), Opacus' modes the ``torch.optim.SGD`` that
its ``PrivacyEngine`` wraps: the same update. Two batch sizes: 64, and 1024, near the large batches
DP-SGD is trained with (the Fashion-MNIST scenario's 2048; De et al. 2022), where per-step
costs weigh less and per-example ones more.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
import warnings
from typing import Any

import torch
from torch import nn

from fedpriv.config import Model
from fedpriv.tasks import build_model, load_digits
from fedpriv.tasks.optim import Sgd

BATCH = 64
#: Batch sizes measured, and the examples each configuration trains on (steps =
#: examples / batch, at least 20).
BATCHES = (64, 1024)
EXAMPLES = 200 * 64
#: Measurements of every mode per configuration (median ratio reported).
REPEATS = 3
MODES = ("non-private", "hooks", "ghost", "bookkeeping")


def _steps(mode: str, model_name: Model, steps: int, device: torch.device,
           batch: int = BATCH) -> float:
    from opacus import PrivacyEngine

    data = load_digits(test_fraction=0.2, seed=0).train
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    model = build_model(model_name, num_features=64, num_classes=10, seed=0).to(device)
    # the client's optimizer where the client trains (non-private, book-keeping); Opacus
    # wraps a torch.optim one. The same update either way (fedpriv.tasks.optim).
    opt: Any = (Sgd(model.parameters(), lr=0.05) if mode in ("non-private", "bookkeeping")
                else torch.optim.SGD(model.parameters(), lr=0.05))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=batch, shuffle=False, drop_last=True)
    criterion: Any = nn.CrossEntropyLoss()
    if mode == "bookkeeping":
        from client.bookkeeping import BookKeepingDpSgd

        dp = BookKeepingDpSgd(model, opt, noise_multiplier=1.0, max_grad_norm=1.0,
                              expected_batch_size=batch, noise_generator=None)
        summed = nn.CrossEntropyLoss(reduction="sum")
    elif mode != "non-private":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = PrivacyEngine().make_private(
                module=model, optimizer=opt, criterion=criterion, data_loader=loader,
                noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
                grad_sample_mode="ghost" if mode == "ghost" else "hooks")
        model, opt = made[0], made[1]
        criterion = made[2] if mode == "ghost" else criterion
    batches = [(xb, yb) for xb, yb in loader]

    def run(n: int) -> None:
        for i in range(n):
            xb, yb = batches[i % len(batches)]
            if mode == "bookkeeping":
                dp.step(xb, yb, summed)
                continue
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()

    if mode == "bookkeeping":
        dp.__enter__()  # hooks on for the whole run, as the client does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(5)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - t0)


def profile_top(model_name: Model, mode: str, steps: int = 30, top: int = 5) -> list[str]:
    """The top entries (by cumulative time) of a profile of one configuration."""
    prof = cProfile.Profile()
    prof.enable()
    _steps(mode, model_name, steps, torch.device("cpu"))
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return [ln.strip() for ln in buf.getvalue().splitlines()
            if ln.strip()[:1].isdigit() and ("{" in ln or ":" in ln)][:top]


def run(quick: bool) -> dict[str, Any]:
    """Throughput for MLP and CNN in each mode and batch, on CPU and (if present) CUDA."""
    examples = 15 * 64 if quick else EXAMPLES
    batches = (64, 256) if quick else BATCHES
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    torch.set_num_threads(1)
    rows = []
    repeats = 1 if quick else REPEATS
    for device in devices:
        for batch in batches:
            steps = max(examples // batch, 5 if quick else 20)
            for model_name in (Model.MLP, Model.CNN):
                # each repeat measures non-private and every mode back to back; the ratio
                # is the median of the repeats' ratios (a shared machine drifts between)
                runs = [{mode: _steps(mode, model_name, steps, device, batch)
                         for mode in MODES} for _ in range(repeats)]
                for mode in MODES:
                    rows.append({
                        "device": device.type, "model": model_name.value, "mode": mode,
                        "examples_per_s": statistics.median(r[mode] for r in runs),
                        "ratio_to_non_private": statistics.median(
                            r[mode] / r["non-private"] for r in runs),
                        "batch": batch, "steps": steps, "repeats": repeats})
    return {"rows": rows, "profile_cnn_hooks": profile_top(Model.CNN, "hooks")}
