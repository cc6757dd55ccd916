"""fedpriv.tasks.optim.Sgd against torch.optim.SGD, bit for bit, and what it spares."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from fedpriv.tasks.optim import Sgd


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_takes_torchs_steps_exactly(momentum, dtype):
    ours, theirs = _model(0).to(dtype), _model(0).to(dtype)
    opt_ours = Sgd(ours.parameters(), lr=0.07, momentum=momentum)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.07, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    for step in range(25):
        x = torch.randn(5, 8, generator=gen, dtype=dtype)
        y = torch.randint(0, 3, (5,), generator=gen)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            if step % 7 == 3:  # a parameter without a gradient keeps its buffer
                model[2].bias.grad = None
            opt.step()
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b), (step, (a - b).abs().max())


def test_zero_grad_drops_or_zeroes_and_bad_settings_are_named():
    model = _model(0)
    opt = Sgd(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(torch.randn(2, 8)), torch.tensor([0, 1])).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="lr must be >= 0, got -1"):
        Sgd(model.parameters(), lr=-1.0)
    with pytest.raises(ValueError, match="momentum must be >= 0"):
        Sgd(model.parameters(), lr=0.1, momentum=float("nan"))
    with pytest.raises(ValueError, match="empty parameter list"):
        Sgd([], lr=0.1)


def test_a_client_training_round_never_imports_torchs_compiler():
    # torch.optim's first optimizer imports torch._dynamo (sympy, mpmath: ~71 MB resident),
    # the largest single cost of an edge client's memory; the client's own paths avoid it.
    code = """
import sys
import numpy as np
import torch
from fedpriv.config import RunConfig
from fedpriv.tasks import ArrayDataset, build_task_model
from fedpriv.tasks.optim import Sgd
from fedpriv.tasks.training import train_epochs
from fedpriv.tasks import to_loader
from client.privacy import dp_sgd_train, planned_event
cfg = RunConfig.from_mapping({"dp-mode": "record", "noise-multiplier": 1.0}).resolved()
rng = np.random.default_rng(0)
data = ArrayDataset(rng.random((64, 64), dtype=np.float32), rng.integers(0, 10, 64))
model = build_task_model(cfg, device=torch.device("cpu"))
event = planned_event(cfg, len(data), cfg.privacy.clip_norm)
dp_sgd_train(model, data, cfg, event=event, device=torch.device("cpu"),
             sampling=torch.Generator().manual_seed(0), noise=torch.Generator().manual_seed(1))
loader = to_loader(data, 16, shuffle=True, generator=torch.Generator())
train_epochs(model, loader, Sgd(model.parameters(), lr=0.1, momentum=0.9), epochs=1,
             device=torch.device("cpu"))
print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "sympy"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout[-500:]
