"""Fixed features: computed once per data set and process, the same as the model computes."""

import numpy as np
import pytest
import torch

from fedpriv.config import RunConfig
from fedpriv.tasks import (
    ArrayDataset,
    build_task_model,
    clear_feature_cache,
    model_inputs,
    scatternet_features,
)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.random((n, 784), dtype=np.float32),
                        rng.integers(0, 10, n).astype(np.int64))


def _cfg(model):
    return RunConfig.from_mapping({"dataset": "fashion-mnist", "model": model})


def test_other_models_take_the_data_as_it_is():
    data = _images(3, 0)
    assert model_inputs(_cfg("cnn"), data) is data


def test_scatternet_inputs_are_the_coefficients_in_order_computed_once():
    clear_feature_cache()
    cfg, data = _cfg("scatternet"), _images(70, 1)  # more than one chunk of 64
    first = model_inputs(cfg, data)
    assert first.x.shape == (70, 81, 7, 7) and first.x.dtype == np.float32
    np.testing.assert_array_equal(first.y, data.y)
    model = build_task_model(cfg)
    with torch.no_grad():
        direct = model.scatter(torch.from_numpy(data.x[65:70])).numpy()
    np.testing.assert_allclose(first.x[65:70], direct, rtol=1e-5, atol=1e-6)
    # the same images again (another array object): served from the cache, not recomputed
    again = model_inputs(cfg, ArrayDataset(data.x.copy(), data.y))
    assert again.x is first.x
    # other images: other coefficients
    other = model_inputs(cfg, _images(70, 2))
    assert other.x is not first.x and not np.allclose(other.x, first.x)
    clear_feature_cache()
    assert model_inputs(cfg, data).x is not first.x


def test_a_cache_directory_serves_later_processes(tmp_path, monkeypatch):
    from fedpriv.tasks.features import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    clear_feature_cache()
    cfg, data = _cfg("scatternet"), _images(5, 4)
    first = model_inputs(cfg, data)
    (path,) = tmp_path.glob("scatternet-*.npy")
    np.testing.assert_array_equal(np.load(path), first.x)
    clear_feature_cache()  # a new process: memory empty, the file read back
    np.save(path, first.x * 0 + 7.0)  # what is on disk is what is served
    assert (model_inputs(cfg, data).x == 7.0).all()
    clear_feature_cache()
    path.write_bytes(b"torn")  # an unreadable file is recomputed and replaced
    np.testing.assert_array_equal(model_inputs(cfg, data).x, first.x)
    np.testing.assert_array_equal(np.load(path), first.x)
    clear_feature_cache()


def test_scatternet_features_accept_flat_and_square_images():
    x = np.random.default_rng(3).random((2, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(scatternet_features(x), scatternet_features(x.reshape(2, 784)))


def test_remembered_features_are_served_for_the_same_images_reordered(tmp_path, monkeypatch):
    # Prepare: coefficients of 6 images; a data set holding 4 of them, reordered
    from fedpriv.tasks.features import CACHE_ENV, remember_features

    clear_feature_cache()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    cfg, data = _cfg("scatternet"), _images(6, 3)
    coeffs = scatternet_features(data.x)
    order = np.array([5, 0, 3, 1])
    # the transform is per image: gathered rows are what computing the subset gives
    np.testing.assert_allclose(scatternet_features(data.x[order]), coeffs[order],
                               rtol=1e-5, atol=1e-6)
    # Execute: remember (marked) rows under the reordered images; a later process
    remember_features(data.x[order], coeffs[order] + 7.0, groups=27)
    clear_feature_cache()
    got = model_inputs(cfg, data.subset(order))
    # Assert: what was remembered is served, not recomputed
    np.testing.assert_array_equal(got.x, coeffs[order] + 7.0)
    assert len(list(tmp_path.glob("scatternet-*.npy"))) == 1
    with pytest.raises(ValueError, match="features must be float32"):
        remember_features(data.x[:2], coeffs[:3], groups=27)
    clear_feature_cache()


def test_the_normalisation_is_part_of_the_cache_key_and_of_the_model(tmp_path, monkeypatch):
    """``scatternet-norm-groups`` changes the stored coefficients, so it keys the cache
    (memory and disk): coefficients normed one way are never served for another. The
    model built with the same setting gives the same logits from images as from them."""
    from fedpriv.config import ConfigError
    from fedpriv.tasks.features import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    clear_feature_cache()
    data = _images(4, 5)
    normed = model_inputs(_cfg("scatternet"), data)  # the default: 27 groups
    plain_cfg = RunConfig.from_mapping({"dataset": "fashion-mnist", "model": "scatternet",
                                        "scatternet-norm-groups": 0})
    plain = model_inputs(plain_cfg, data)
    assert plain.x is not normed.x and not np.allclose(plain.x, normed.x)
    np.testing.assert_allclose(plain.x, scatternet_features(data.x, groups=0), rtol=1e-6)
    # 27 groups of 3 channels: each group has mean 0 over its 3 x 7 x 7 values
    means = normed.x.reshape(4, 27, -1).mean(axis=2)
    np.testing.assert_allclose(means, 0.0, atol=1e-4)
    assert not np.allclose(plain.x.reshape(4, 27, -1).mean(axis=2), 0.0, atol=1e-4)
    assert len(list(tmp_path.glob("scatternet-g0-*.npy"))) == 1
    assert len(list(tmp_path.glob("scatternet-g27-*.npy"))) == 1
    clear_feature_cache()  # a later process reads each back under its own key
    np.testing.assert_array_equal(model_inputs(plain_cfg, data).x, plain.x)
    model = build_task_model(plain_cfg)
    assert isinstance(model.norm, torch.nn.Identity)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(data.x)).numpy(),
                                   model(torch.from_numpy(plain.x)).numpy(),
                                   rtol=1e-4, atol=1e-5)
    for bad in (5, 82, -1):
        with pytest.raises(ConfigError, match="scatternet-norm-groups"):
            RunConfig.from_mapping({"scatternet-norm-groups": bad})
    clear_feature_cache()
