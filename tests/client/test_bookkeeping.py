"""Book-keeping clipping against a naive per-example loop and against Opacus itself."""

import warnings

import pytest
import torch
from torch import nn

from client.bookkeeping import BookKeepingDpSgd, supports
from fedpriv.config import Model
from fedpriv.tasks import build_model


def _batch(n, seed=1, features=64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, features, generator=g) * 2,
            torch.randint(0, 10, (n,), generator=g))


#: Every shipped model: logistic regression, the MLP, the 8x8 ReLU CNN, the 28x28 tanh
#: CNN with group norm, and ScatterNet + group norm (no affine) + linear.
MODELS = [(Model.LOGREG, 64), (Model.MLP, 64), (Model.CNN, 64), (Model.CNN, 784),
          (Model.SCATTERNET, 784)]


def _naive_clipped_sum(model, x, y, clip):
    """sum_i g_i min(1, C / (||g_i|| + 1e-6)), one example at a time (Abadi et al. 2016)."""
    params = list(model.parameters())
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for t, g in zip(total, grads, strict=True):
            t += factor * g.double()
    return total


@pytest.mark.parametrize(("model_name", "features"), MODELS)
@pytest.mark.parametrize("clip", [0.05, 1.0, 100.0])  # all clipped, some, none
def test_clipped_sum_equals_a_naive_loop(model_name, features, clip):
    model = build_model(model_name, num_features=features, num_classes=10, seed=0)
    x, y = _batch(24, features=features)
    expected = _naive_clipped_sum(model, x, y, clip)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: grads stay, weights fixed
    dp = BookKeepingDpSgd(model, opt, noise_multiplier=0.0, max_grad_norm=clip,
                          expected_batch_size=1, noise_generator=None)
    dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad.double(), e, atol=1e-6, rtol=1e-5), (p.shape, clip)


def test_scatternet_on_cached_coefficients_clips_exactly_as_on_raw_images():
    # What a client runs: DP-SGD on the coefficients it computed once (model_inputs), held
    # against a naive per-example loop over the raw images through the whole model; the
    # clipping covers exactly the linear layer, the model's only parameters.
    model = build_model(Model.SCATTERNET, num_features=784, num_classes=10, seed=0)
    assert [n for n, _ in model.named_parameters()] == ["head.weight", "head.bias"]
    x, y = _batch(16, seed=3, features=784)
    x = x.abs().clamp(max=1.0)  # pixels in [0, 1]
    coefficients = model.scatter(x)  # (16, 81, 7, 7)
    for clip in (0.01, 100.0):
        expected = _naive_clipped_sum(model, x, y, clip)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        dp = BookKeepingDpSgd(model, opt, noise_multiplier=0.0, max_grad_norm=clip,
                              expected_batch_size=1, noise_generator=None)
        dp.step(coefficients, y, nn.CrossEntropyLoss(reduction="sum"))
        for p, e in zip(model.parameters(), expected, strict=True):
            assert torch.allclose(p.grad.double(), e, atol=1e-6, rtol=1e-5), (p.shape, clip)


def _opacus_update(model, x_batches, y_batches, sigma, clip, seed, expected):
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      noise_multiplier=sigma, max_grad_norm=clip,
                      expected_batch_size=expected,
                      generator=torch.Generator().manual_seed(seed))
    gsm = GradSampleModule(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y in zip(x_batches, y_batches, strict=True):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(gsm(x), y).backward()
            opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("model_name", "features"), MODELS)
def test_noised_steps_with_momentum_equal_opacus_hooks_with_the_same_generator(
        model_name, features):
    # Same batches, same noise generator state, SGD with momentum: every parameter after
    # three steps agrees with Opacus' DPOptimizer over its per-example hooks to 1e-6.
    def fresh():
        return build_model(model_name, num_features=features, num_classes=10, seed=0)

    xs, ys = zip(*[_batch(n, seed=n, features=features) for n in (31, 40, 7)], strict=True)
    ours = fresh()
    opt = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    dp = BookKeepingDpSgd(ours, opt, noise_multiplier=1.3, max_grad_norm=0.7,
                          expected_batch_size=32,
                          noise_generator=torch.Generator().manual_seed(7))
    for x, y in zip(xs, ys, strict=True):
        dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
    ref = _opacus_update(fresh(), xs, ys, 1.3, 0.7, 7, 32)
    for a, b in zip(ours.parameters(), ref, strict=True):
        assert torch.allclose(a, b, atol=1e-6), a.shape
    assert not torch.allclose(next(ours.parameters()), next(fresh().parameters()))


def test_an_empty_batch_is_a_noise_only_step_of_the_right_scale():
    model = build_model(Model.LOGREG, num_features=64, num_classes=10, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sigma, clip, batch = 2.0, 0.5, 4
    dp = BookKeepingDpSgd(model, opt, noise_multiplier=sigma, max_grad_norm=clip,
                          expected_batch_size=batch,
                          noise_generator=torch.Generator().manual_seed(3))
    dp.step(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long),
            nn.CrossEntropyLoss(reduction="sum"))
    moved = torch.cat([(b - p.detach()).ravel() for p, b in zip(model.parameters(), before,
                                                                  strict=True)])
    # lr 1: the move is the noise / batch, N(0, (sigma C / B)^2) per coordinate (650 of them)
    std = float(moved.std())
    assert abs(std - sigma * clip / batch) < 0.1 * sigma * clip / batch, std
    assert abs(float(moved.mean())) < 4 * sigma * clip / batch / len(moved) ** 0.5


def test_noise_has_the_stated_standard_deviation():
    model = build_model(Model.LOGREG, num_features=64, num_classes=10, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sigma, clip = 1.1, 0.3
    dp = BookKeepingDpSgd(model, opt, noise_multiplier=sigma, max_grad_norm=clip,
                          expected_batch_size=1, noise_generator=torch.Generator().manual_seed(5))
    x, y = _batch(16)
    clean = _naive_clipped_sum(model, x, y, clip)
    draws = []
    for _ in range(40):
        dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
        draws.append(torch.cat([(p.grad.double() - c).ravel()
                                for p, c in zip(model.parameters(), clean, strict=True)]))
    noise = torch.cat(draws)  # 40 x 650 draws of N(0, (sigma C)^2)
    assert abs(float(noise.std()) / (sigma * clip) - 1) < 0.02
    assert abs(float(noise.mean())) < 4 * sigma * clip / len(noise) ** 0.5


def test_only_covered_layers_qualify():
    for name, features in MODELS:
        assert supports(build_model(name, num_features=features, num_classes=10, seed=0))
    assert not supports(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    assert not supports(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)))
    assert not supports(nn.Sequential(nn.Conv2d(4, 4, 3, padding="same")))
    assert not supports(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    # parameter-free, but it mixes the batch: per-example gradients would be wrong
    assert not supports(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False)))
    assert supports(nn.Sequential(nn.GroupNorm(2, 4, affine=False), nn.Flatten(),
                                  nn.Linear(4, 2)))
    assert not supports(nn.Sequential(nn.ReLU()))


def test_a_layer_used_twice_is_refused():
    layer = nn.Linear(8, 8)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(self.layer(x))

    _refuses(Twice(), torch.randn(4, 8), torch.randint(0, 8, (4,)), "ran twice")


def _refuses(model, x, y, match):
    """A step on ``model`` is refused with ``match``, and the model is left as it was."""
    dp = BookKeepingDpSgd(model, torch.optim.SGD(model.parameters(), lr=0.1),
                          noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4,
                          noise_generator=None)
    with pytest.raises(RuntimeError, match=match):
        dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
    assert all(p.requires_grad for p in model.parameters())  # restored after the refusal


def test_many_steps_in_one_context_equal_single_steps_and_restore_the_model():
    xs, ys = zip(*[_batch(n, seed=n) for n in (20, 0, 9)], strict=True)
    results = []
    for use_context in (False, True):
        model = build_model(Model.MLP, num_features=64, num_classes=10, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dp = BookKeepingDpSgd(model, opt, noise_multiplier=0.8, max_grad_norm=1.0,
                              expected_batch_size=16,
                              noise_generator=torch.Generator().manual_seed(11))
        if use_context:
            with dp:
                assert not any(p.requires_grad for p in model.parameters())
                for x, y in zip(xs, ys, strict=True):
                    dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
        else:
            for x, y in zip(xs, ys, strict=True):
                dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
        assert all(p.requires_grad for p in model.parameters())
        assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_a_reproducible_record_level_federation_ends_where_opacus_would(tmp_path, monkeypatch,
                                                                         model_name):
    # End to end through the ClientApp: with seeded sampling and noise (reproducible),
    # the run with book-keeping clipping and the run forced onto Opacus end with the same
    # model and the same epsilon.

    import numpy as np

    import client.bookkeeping
    from bench.loopback import LoopbackGrid, task_identity
    from client.app import app as client_app
    from fedpriv.config import RunConfig
    from server.federation import run_federation
    from server.reporting import LogReporter
    from server.rundir import RunDirectory

    def run(name):
        cfg = RunConfig.from_mapping({
            "rounds": 2, "clients": 3, "local-epochs": 1, "partition": "iid",
            "model": model_name, "dp-mode": "record", "noise-multiplier": 1.0,
            "reproducible": True}).resolved()
        cfg = cfg.with_values(run_dir=str(tmp_path / name))
        nodes = {i + 1: {"partition-id": i, "num-partitions": 3} for i in range(3)}
        run_dir = RunDirectory(tmp_path / name).create()
        with task_identity():
            summary = run_federation(LoopbackGrid(client_app, nodes), cfg, run_dir,
                                     scenario="t", reporter=LogReporter())
        return summary, run_dir.load_model()

    ours, ours_model = run("bookkeeping")
    monkeypatch.setattr(client.bookkeeping, "supports", lambda model: False)
    theirs, theirs_model = run("opacus")
    assert ours["status"] == theirs["status"] == "completed"
    assert ours["epsilon"] == theirs["epsilon"]
    assert ours_model.keys() == theirs_model.keys()
    for key in ours_model:
        assert np.allclose(ours_model[key], theirs_model[key], atol=1e-5), key


@pytest.mark.parametrize(("n", "batch"), [(50, 8), (7, 64), (300, 300), (1, 1)])
def test_poisson_batches_are_the_ones_opacus_draws(n, batch):
    # Same generator state, same batches (empty ones included: at q = 1/ceil(7/64) = 1 no
    # batch is empty, at 8/50 some are), same rate and number of batches per pass.
    from opacus.data_loader import DPDataLoader

    from client.bookkeeping import poisson_loader
    from fedpriv.tasks import to_loader
    from fedpriv.tasks.data import ArrayDataset

    rng = torch.Generator().manual_seed(n)
    data = ArrayDataset(torch.randn(n, 3, generator=rng).numpy(),
                        torch.randint(0, 4, (n,), generator=rng).numpy())
    ours = poisson_loader(to_loader(data, batch, shuffle=True,
                                    generator=torch.Generator().manual_seed(5)))
    theirs = DPDataLoader.from_data_loader(to_loader(data, batch, shuffle=True,
                                                     generator=torch.Generator().manual_seed(5)))
    assert ours.sample_rate == theirs.sample_rate
    for _ in range(3):  # passes continue the same generator
        got, want = list(ours), list(theirs)
        assert len(got) == len(want) == int(1 / ours.sample_rate)
        for (xa, ya), (xb, yb) in zip(got, want, strict=True):
            assert xa.shape[1:] == (3,) and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_gaussian_noise_is_opacus_draw():
    from opacus.optimizers.optimizer import _generate_noise

    from client.bookkeeping import gaussian_noise

    ref = torch.zeros(4, 5)
    for std in (0.0, 0.3, 2.0):
        a = gaussian_noise(std=std, reference=ref, generator=torch.Generator().manual_seed(1))
        b = _generate_noise(std=std, reference=ref, generator=torch.Generator().manual_seed(1))
        assert a.dtype == b.dtype and torch.equal(a, b)


class _Convs(nn.Module):
    """Convolutions of every kind the patches are built for: padded, strided, dilated,
    without bias, on more than one input channel."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2, 5, 3, padding=1), nn.Tanh(),
            nn.Conv2d(5, 6, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), nn.ReLU(),
            nn.Conv2d(6, 4, 2, dilation=2, padding=1), nn.Flatten())
        self.head = nn.LazyLinear(10)

    def forward(self, x):
        return self.head(self.body(x.view(-1, 2, 6, 6)))


@pytest.mark.parametrize("ghost", [True, False])
@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_convolutions_clip_exactly_by_the_ghost_norm_and_by_formed_gradients(
        monkeypatch, ghost, clip):
    # Either way of taking a convolution's per-example norm (and clipped sum) against the
    # naive loop, on convolutions of every shape the patches are built for.
    import client.bookkeeping as bk

    monkeypatch.setattr(bk, "ghost_norm_pays", lambda *_: ghost)
    model = _Convs()
    x, y = _batch(12, seed=5, features=72)
    model(x)  # materialise the lazy head
    expected = _naive_clipped_sum(model, x, y, clip)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    BookKeepingDpSgd(model, opt, noise_multiplier=0.0, max_grad_norm=clip,
                     expected_batch_size=1, noise_generator=None).step(
        x, y, nn.CrossEntropyLoss(reduction="sum"))
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad.double(), e, atol=1e-6, rtol=1e-5), (p.shape, clip)


@pytest.mark.parametrize("layer", [
    nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 3, (3, 2), stride=(2, 1), padding=(1, 0)),
    nn.Conv2d(3, 2, 3, stride=2, padding=2, bias=False), nn.Conv2d(1, 2, 1)])
def test_patches_copied_by_kernel_offset_are_the_channels_last_ones(layer):
    from client.bookkeeping import _patches

    a = torch.randn(5, layer.in_channels, 7, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_patches(layer, a, by_offset=True), _patches(layer, a))


class _GreyConvs(nn.Module):
    """Single-channel convolutions (grey images), whose patches are copied by offset."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 2, (2, 3), stride=(1, 2), bias=False)
        self.head = nn.LazyLinear(10)

    def forward(self, x):
        img = x.view(-1, 1, 8, 8)
        return self.head(torch.cat([torch.tanh(self.a(img)).flatten(1),
                                    torch.relu(self.b(img)).flatten(1)], 1))


@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_single_channel_convolutions_clip_exactly_with_patches_copied_by_offset(
        monkeypatch, clip):
    import client.bookkeeping as bk

    calls = []
    patches = bk._patches

    def spy(layer, a, *, by_offset=False):
        calls.append(by_offset)
        return patches(layer, a, by_offset=by_offset)

    monkeypatch.setattr(bk, "_BY_OFFSET_PATCHES", 1)  # every batch, however small
    monkeypatch.setattr(bk, "_patches", spy)
    model = _GreyConvs()
    x, y = _batch(12, seed=6, features=64)
    model(x)  # materialise the lazy head
    expected = _naive_clipped_sum(model, x, y, clip)
    BookKeepingDpSgd(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=0.0,
                     max_grad_norm=clip, expected_batch_size=1, noise_generator=None).step(
        x, y, nn.CrossEntropyLoss(reduction="sum"))
    assert calls == [True, True]
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad.double(), e, atol=1e-6, rtol=1e-5), (p.shape, clip)


def test_the_ghost_norm_is_taken_where_it_is_cheaper():
    from client.bookkeeping import ghost_norm_pays

    assert ghost_norm_pays(16, 32, 144)  # the digits CNN's second convolution
    assert not ghost_norm_pays(64, 16, 9)  # its first: 64 positions, 3x3 patches


def test_an_activation_in_place_is_not_covered_and_an_in_place_edit_is_refused():
    # An in-place ReLU would overwrite the linear layer's output, whose gradient the
    # clipping needs: such a model goes to Opacus, and an in-place edit hidden in a
    # forward() is refused rather than clipped with the wrong gradient.
    assert not supports(nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)))
    assert supports(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu_(self.a(x)))

    _refuses(Hidden(), torch.randn(4, 4), torch.randint(0, 2, (4,)), "modified in place")


def test_a_layer_that_does_not_run_is_refused_and_one_that_does_not_count_gets_noise_only():
    class Skips(nn.Module):
        def __init__(self, use):
            super().__init__()
            self.a, self.b, self.use = nn.Linear(4, 2), nn.Linear(4, 2), use

        def forward(self, x):
            out = self.a(x)
            if self.use == "run":  # b runs, but the loss does not depend on it
                self.b(x)
            return out

    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    model = Skips("skip")
    dp = BookKeepingDpSgd(model, torch.optim.SGD(model.parameters(), lr=0.0),
                          noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=1,
                          noise_generator=None)
    with pytest.raises(RuntimeError, match="did not run"):
        dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
    model = Skips("run")
    expected = _naive_clipped_sum(nn.Sequential(model.a), x, y, 1.0)
    dp = BookKeepingDpSgd(model, torch.optim.SGD(model.parameters(), lr=0.0),
                          noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=1,
                          noise_generator=None)
    dp.step(x, y, nn.CrossEntropyLoss(reduction="sum"))
    assert torch.count_nonzero(model.b.weight.grad) == 0
    assert torch.count_nonzero(model.b.bias.grad) == 0
    for p, e in zip(model.a.parameters(), expected, strict=True):
        assert torch.allclose(p.grad.double(), e, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_name", [Model.MLP, Model.CNN])
def test_a_double_precision_model_clips_exactly_and_takes_noise(model_name):
    model = build_model(model_name, num_features=64, num_classes=10, seed=0).double()
    x, y = _batch(10, seed=4)
    x = x.double()
    expected = _naive_clipped_sum(model, x, y, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    BookKeepingDpSgd(model, opt, noise_multiplier=0.0, max_grad_norm=0.5,
                     expected_batch_size=1, noise_generator=None).step(
        x, y, nn.CrossEntropyLoss(reduction="sum"))
    for p, e in zip(model.parameters(), expected, strict=True):
        assert p.grad.dtype == torch.float64
        assert torch.allclose(p.grad, e, atol=1e-9, rtol=1e-7), p.shape
    BookKeepingDpSgd(model, opt, noise_multiplier=1.0, max_grad_norm=0.5,
                     expected_batch_size=1, noise_generator=None).step(
        x, y, nn.CrossEntropyLoss(reduction="sum"))
    assert all(p.grad.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize("value", [1e38, float("inf")])
@pytest.mark.parametrize("model_name", [Model.MLP, Model.LOGREG, Model.CNN])
def test_an_example_whose_gradient_overflows_adds_nothing_instead_of_poisoning_the_sum(
        model_name, value):
    # One example with features at 1e38 (or inf) makes its gradient infinite or NaN.
    # Dropping it, not the whole sum, keeps one example from making its client withdraw
    # a round (a release no clip bounds): the sum is that of the other examples.
    model = build_model(model_name, num_features=64, num_classes=10, seed=0)
    x, y = _batch(12, features=64)
    bad = x.clone()
    bad[5] = value
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    dp = BookKeepingDpSgd(model, opt, noise_multiplier=0.0, max_grad_norm=0.5,
                          expected_batch_size=1, noise_generator=None)
    got, _ = dp.clipped_sum(bad, y, nn.CrossEntropyLoss(reduction="sum"))
    keep = torch.arange(12) != 5
    expected = _naive_clipped_sum(model, x[keep], y[keep], 0.5)
    for g, e in zip(got, expected, strict=True):
        assert torch.isfinite(g).all()
        assert torch.allclose(g.double(), e, atol=1e-6, rtol=1e-5)
