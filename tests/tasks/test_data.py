import numpy as np
import pytest
import torch

from fedpriv.config import Model, Partition, RunConfig
from fedpriv.tasks import (
    ArrayDataset,
    build_model,
    evaluate,
    generate_synthetic,
    load_digits,
    to_loader,
    train_epochs,
)
from fedpriv.tasks.synthetic import NUM_CLASSES, NUM_FEATURES


def test_digits_is_the_full_sklearn_set_split_stratified():
    data = load_digits(test_fraction=0.2, seed=0)
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == 360
    assert data.feature_shape == (64,) and data.num_classes == 10
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    # Stratified: every label is in the test split in proportion.
    counts = np.bincount(data.test.y, minlength=10)
    assert counts.min() >= 30


def test_digits_split_is_deterministic_under_a_seed():
    a, b = load_digits(test_fraction=0.2, seed=3), load_digits(test_fraction=0.2, seed=3)
    c = load_digits(test_fraction=0.2, seed=4)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.y, c.train.y)


def test_synthetic_matches_the_fedprox_recipe():
    data = generate_synthetic(alpha=1.0, beta=1.0, num_users=30, test_fraction=0.2, seed=0)
    assert data.feature_shape == (NUM_FEATURES,) and data.num_classes == NUM_CLASSES
    assert len(data.natural_partition) == 30
    sizes = np.array([len(p) for p in data.natural_partition])
    assert sizes.sum() == len(data.train)
    # Lognormal user sizes: heavy-tailed, every user keeps >= 40 training rows.
    assert sizes.min() >= 40 and sizes.max() > 5 * np.median(sizes)
    # The natural partition covers the pool exactly once.
    np.testing.assert_array_equal(np.sort(np.concatenate(data.natural_partition)),
                                  np.arange(len(data.train)))


def test_synthetic_is_deterministic_and_heterogeneity_grows_with_alpha_beta():
    a = generate_synthetic(alpha=1.0, beta=1.0, num_users=10, test_fraction=0.2, seed=1)
    b = generate_synthetic(alpha=1.0, beta=1.0, num_users=10, test_fraction=0.2, seed=1)
    np.testing.assert_array_equal(a.train.x, b.train.x)

    def spread_of_user_means(d):
        # beta shifts every feature of a user by a shared B_k ~ N(0, beta).
        means = np.stack([d.train.x[p].mean(axis=0) for p in d.natural_partition])
        return float(means.mean(axis=1).std())

    iid = generate_synthetic(alpha=0.0, beta=0.0, num_users=10, test_fraction=0.2, seed=1)
    assert spread_of_user_means(a) > 2 * spread_of_user_means(iid)


@pytest.mark.parametrize("num_features", [64, 784])  # digits 8x8; 28x28 images
@pytest.mark.parametrize("model", [Model.MLP, Model.CNN, Model.LOGREG])
def test_models_are_seeded_and_shaped(model, num_features):
    a = build_model(model, num_features=num_features, num_classes=10, seed=5)
    b = build_model(model, num_features=num_features, num_classes=10, seed=5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert a(torch.zeros(3, num_features)).shape == (3, 10)


def test_training_reduces_loss_and_fedprox_term_pulls_towards_global():
    data = load_digits(test_fraction=0.2, seed=0)
    model = build_model(Model.MLP, num_features=64, num_classes=10, seed=0)
    loss0, _ = evaluate(model, data.train, device=torch.device("cpu"))
    loader = to_loader(data.train, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_epochs(model, loader, opt, epochs=3, device=torch.device("cpu"))
    loss1, acc1 = evaluate(model, data.test, device=torch.device("cpu"))
    assert loss1 < loss0 and acc1 > 0.8

    def drift(mu):
        m = build_model(Model.MLP, num_features=64, num_classes=10, seed=0)
        g = [p.detach().clone() for p in m.parameters()]
        o = torch.optim.SGD(m.parameters(), lr=0.05)
        ld = to_loader(data.train, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
        train_epochs(m, ld, o, epochs=1, device=torch.device("cpu"),
                     proximal_mu=mu, global_params=g)
        pairs = zip(m.parameters(), g, strict=True)
        return sum(float((p.detach() - q).norm() ** 2) for p, q in pairs)

    assert drift(5.0) < drift(0.0)


def test_array_dataset_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="same number of rows"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(2, dtype=np.int64))


def test_resolved_defaults_per_dataset():
    assert RunConfig().resolved().data.partition is Partition.DIRICHLET


def test_to_loader_yields_the_default_loaders_batches_and_empty_poisson_batches():
    from opacus.data_loader import DPDataLoader

    from fedpriv.tasks.data import ArrayDataset, to_loader

    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.random((23, 3, 2), dtype=np.float32), rng.integers(0, 4, 23))
    ours = to_loader(data, 5, shuffle=True, generator=torch.Generator().manual_seed(4))
    plain = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(data.x), torch.from_numpy(data.y)),
        batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(4))
    pairs = list(zip(ours, plain, strict=True))
    assert len(pairs) == 5
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Opacus' Poisson loader over it: an empty draw is an empty batch of the right shape
    tiny = ArrayDataset(data.x[:1], data.y[:1])
    poisson = DPDataLoader.from_data_loader(
        to_loader(tiny, 1, shuffle=True, generator=torch.Generator().manual_seed(0)))
    poisson.batch_sampler.sample_rate = 1e-9  # every draw empty
    (xe, ye), = list(poisson)
    assert xe.shape == (0, 3, 2) and ye.shape == (0,)
