"""model = lm-lora on a tiny random Llama (no files): adapters only, exact per-example
gradients and clipping, the text encoding, and the configuration's errors."""

import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="lm-lora needs transformers: pip install -e '.[dev]'")
pytest.importorskip("peft", reason="lm-lora needs peft: pip install -e '.[dev]'")

from fedpriv.config import ConfigError, LmBase, RunConfig  # noqa: E402
from fedpriv.tasks import (  # noqa: E402
    LoraLanguageModel,
    LoraSpec,
    SequenceNll,
    build_lora_model,
    build_task_model,
    evaluate,
)
from fedpriv.tasks.fine_foods import encode_texts, read_reviews  # noqa: E402
from fedpriv.tasks.lm import require_llm, tiny_llama_config  # noqa: E402

SPEC = LoraSpec(rank=2, alpha=4.0, targets=("q_proj", "v_proj"))


def tiny(spec=SPEC, seed=0):
    return build_lora_model(LmBase.TINY_RANDOM, spec, seed=seed)


def batch(n=4, length=12, seed=0):
    """Right-padded ids of different lengths (2..length) and their token counts."""
    g = np.random.default_rng(seed)
    lengths = np.linspace(2, length, n).astype(np.int64)
    x = np.full((n, length), -1, dtype=np.int64)
    for i, n_i in enumerate(lengths):
        x[i, :n_i] = g.integers(3, 260, n_i)
    return torch.from_numpy(x), torch.from_numpy(lengths)


def test_state_is_the_adapters_only():
    model = tiny()
    state = model.state_dict()
    cfg = tiny_llama_config()
    # q: A (r x 64), B (64 x r); v: A (r x 64), B (kv_heads * head_dim = 32 x r); 2 layers
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_layer = 2 * 64 + 64 * 2 + 2 * 64 + cfg.num_key_value_heads * head_dim * 2
    assert sum(v.numel() for v in state.values()) == cfg.num_hidden_layers * per_layer
    assert all(("lora_A" in k or "lora_B" in k) for k in state)
    assert list(state) == list(model.adapter_keys)
    trainable = {f"net.{n}" for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == set(state)


def test_a_strict_load_wants_exactly_the_adapters_and_never_touches_the_base():
    model = tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="adapter state mismatch"):
        model.load_state_dict({k: v for k, v in list(state.items())[1:]})
    base_key = "net.base_model.model.model.embed_tokens.weight"
    with pytest.raises(RuntimeError, match="not adapter tensors"):
        model.load_state_dict({base_key: torch.zeros(260, 64)}, strict=False)
    model.load_state_dict({k: v + 1 for k, v in state.items()})
    assert all(torch.equal(model.state_dict()[k], state[k] + 1) for k in state)


def test_fresh_adapters_leave_the_base_model_unchanged_and_repeat_per_seed():
    ids, _ = batch()
    a, b, c = tiny(seed=0), tiny(seed=0), tiny(seed=1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    with torch.no_grad():  # B = 0 (Hu et al. 2021): Delta W = BA = 0 at the start
        with a.net.disable_adapter():
            base = a.logits(ids)
        assert torch.equal(a.logits(ids), base)


def test_the_base_is_shared_frozen_and_not_modified_by_training():
    a, b = tiny(), tiny()
    emb = "base_model.model.model.embed_tokens.weight"
    pa, pb = a.net.get_parameter(emb), b.net.get_parameter(emb)
    assert pa is pb and not pa.requires_grad
    before = pa.detach().clone()
    ids, lengths = batch()
    opt = torch.optim.SGD([p for p in a.parameters() if p.requires_grad], lr=1.0)
    SequenceNll()(a(ids), lengths).backward()
    opt.step()
    assert torch.equal(pa, before)
    assert any(not torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_lora_layers_adapts_the_top_blocks_only():
    model = tiny(LoraSpec(rank=2, alpha=4.0, targets=("o_proj",), layers=1))
    assert model.state_dict() and all(".layers.1." in k for k in model.state_dict())
    with pytest.raises(ConfigError, match=r"lora-layers: must be in \[0, 2\]"):
        tiny(LoraSpec(rank=2, alpha=4.0, targets=("o_proj",), layers=3))


def test_sequence_nll_is_each_examples_mean_token_nll():
    model = tiny()
    ids, lengths = batch()
    with torch.no_grad():
        nll = model(ids)  # (B, L-1)
        logits = model.logits(ids)
    for i, n_i in enumerate(lengths.tolist()):
        want = torch.nn.functional.cross_entropy(logits[i, :n_i - 1], ids[i, 1:n_i])
        got = nll[i, :n_i - 1].sum() / (n_i - 1)
        assert float(got) == pytest.approx(float(want), rel=1e-5)
        assert torch.all(nll[i, n_i - 1:] == 0)  # padding costs nothing
    loss = SequenceNll()(nll, lengths)
    assert float(loss) == pytest.approx(float(sum(
        nll[i].sum() / (n - 1) for i, n in enumerate(lengths.tolist())) / len(lengths)))


def per_example_grads(model, ids, lengths):
    """Autograd, one example at a time: the reference for Opacus' hooks."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for i in range(len(lengths)):
        loss = SequenceNll()(model(ids[i:i + 1]), lengths[i:i + 1])
        grads.append(torch.autograd.grad(loss, params))
    return [torch.stack(g) for g in zip(*grads, strict=True)]  # each (B, *shape)


def test_opacus_per_example_gradients_equal_per_example_autograd():
    from opacus import GradSampleModule

    model = tiny()
    with torch.no_grad():  # B != 0, so that A's gradients are not all zero
        for v in model.state_dict().values():
            v.copy_(torch.randn_like(v) * 0.1)
    ids, lengths = batch(n=5)
    want = per_example_grads(model, ids, lengths)
    gsm = GradSampleModule(model, loss_reduction="mean")
    SequenceNll()(gsm(ids), lengths).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    for p, w in zip(params, want, strict=True):
        assert p.grad_sample.shape == w.shape
        torch.testing.assert_close(p.grad_sample, w, rtol=1e-4, atol=1e-6)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(getattr(p, "grad_sample", None) is None and p.grad is None for p in frozen)
    gsm._close()


def test_dp_sgd_step_is_the_mean_of_clipped_per_example_gradients():
    # Abadi et al. 2016, Algorithm 1 with sigma = 0: g = (1/B) sum_i g_i / max(1, |g_i|/C)
    from opacus import PrivacyEngine

    model = tiny()
    with torch.no_grad():
        for v in model.state_dict().values():
            v.copy_(torch.randn_like(v) * 0.1)
    ids, lengths = batch(n=4)
    want = per_example_grads(model, ids, lengths)
    norms = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in want))  # (B,)
    clip = float(norms.median())  # some examples clipped, some not
    scale = torch.clamp(clip / norms, max=1.0)  # (B,)
    params = [p for p in model.parameters() if p.requires_grad]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, lengths),
                                         batch_size=4)
    dp_model, opt, dp_loader = PrivacyEngine().make_private(
        module=model, optimizer=torch.optim.SGD(params, lr=0.0), data_loader=loader,
        noise_multiplier=0.0, max_grad_norm=clip, poisson_sampling=False)
    xb, yb = next(iter(dp_loader))
    SequenceNll()(dp_model(xb), yb).backward()
    opt.step()
    for p, g in zip(params, want, strict=True):
        expected = (g * scale.view(-1, *[1] * (g.dim() - 1))).sum(0) / 4
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-7)


def test_evaluate_reports_token_nll_and_next_token_accuracy():
    model = tiny()
    ids, lengths = batch(n=3)
    from fedpriv.tasks import ArrayDataset

    data = ArrayDataset(ids.numpy(), lengths.numpy())
    loss, acc = evaluate(model, data, device=torch.device("cpu"))
    with torch.no_grad():
        nll = model(ids)
    assert loss == pytest.approx(float(nll.sum() / (lengths - 1).sum()), rel=1e-5)
    assert 0.0 <= acc <= 1.0


def test_encode_texts_cuts_pads_and_counts():
    data = encode_texts(["abc", "", "a", "abcdefghij"], lambda t: [ord(c) for c in t],
                        seq_len=5, eos=2)
    np.testing.assert_array_equal(data.x, [[97, 98, 99, 2, -1], [97, 2, -1, -1, -1],
                                           [97, 98, 99, 100, 101]])
    np.testing.assert_array_equal(data.y, [4, 2, 5])  # "" gives 1 token: nothing to predict


def test_read_reviews_reads_a_pickled_table_and_names_a_bad_file(tmp_path):
    import pandas as pd

    good = tmp_path / "t.pkl.compress"
    pd.DataFrame({"review": ["  great   stuff ", "", "bad"], "score": [1, 2, 3]}).to_pickle(
        good, compression="xz")
    assert read_reviews(good) == ["great stuff", "bad"]
    bad = tmp_path / "bad.pkl.compress"
    bad.write_bytes(b"not xz")
    with pytest.raises(ValueError, match="bad.pkl.compress: cannot read"):
        read_reviews(bad)
    other = tmp_path / "o.pkl.compress"
    pd.DataFrame({"text": ["x"]}).to_pickle(other, compression="xz")
    with pytest.raises(ValueError, match="o.pkl.compress: expected a table with a 'review'"):
        read_reviews(other)


def test_task_model_follows_the_config():
    cfg = RunConfig.from_mapping({"dataset": "fine-foods", "lm-base": "tiny-random",
                                  "lora-rank": 3, "lora-targets": "k_proj, o_proj"})
    model = build_task_model(cfg)
    assert isinstance(model, LoraLanguageModel)
    assert {k.split(".")[-4] for k in model.state_dict()} == {"k_proj", "o_proj"}
    a = next(v for k, v in model.state_dict().items() if "lora_A" in k)
    assert a.shape[0] == 3


@pytest.mark.parametrize(("values", "match"), [
    ({"dataset": "digits", "model": "lm-lora"},
     r"model: must be one of \{mlp, cnn, logreg\} for dataset=digits, got 'lm-lora'"),
    ({"dataset": "fine-foods", "model": "mlp"},
     r"model: must be one of \{lm-lora\} for dataset=fine-foods, got 'mlp'"),
    ({"dataset": "fine-foods", "partition": "dirichlet"},
     r"partition: must be one of \{iid\} for dataset=fine-foods, got 'dirichlet'"),
    ({"lora-targets": "q_proj,lm_head"},
     r"lora-targets: must be a comma-separated list of \{q_proj, k_proj, v_proj, o_proj, "
     r"gate_proj, up_proj, down_proj\}, got 'q_proj,lm_head'"),
    ({"lora-targets": " , "}, r"lora-targets: must be a comma-separated list"),
    ({"lm-base": "gpt2"}, r"lm-base: must be one of \{smollm2-135m, tiny-random\}, got 'gpt2'"),
    ({"lora-rank": 0}, r"lora-rank: must be in \[1, 256\], got 0"),
    ({"seq-len": 4}, r"seq-len: must be in \[8, 2048\], got 4"),
])
def test_bad_values_name_the_key_the_domain_and_the_value(values, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_mapping(values)


def test_a_missing_extra_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(ConfigError, match=r"model: .* needs peft, .*make llm"):
        require_llm("model=lm-lora")


def test_fedprox_term_covers_the_adapters_not_the_frozen_base():
    from fedpriv.tasks.training import proximal_term

    model = tiny()
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in trainable]
    assert float(proximal_term(model, start, 2.0)) == 0.0
    with torch.no_grad():
        trainable[0].add_(1.0)
    assert float(proximal_term(model, start, 2.0)) == pytest.approx(trainable[0].numel())
