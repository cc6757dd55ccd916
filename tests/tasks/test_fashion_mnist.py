import numpy as np
import pytest

from fedpriv.config import ConfigError, RunConfig
from fedpriv.tasks import load_fashion_mnist, load_task_data, write_idx
from fedpriv.tasks.fashion_mnist import DEFAULT_DIR, FILES


def write_fashion(root, *, n_train=12, n_test=6, gz=True, seed=0):
    """Four tiny IDX files laid out as the Fashion-MNIST repository (and Debian) ship them."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test-labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for role, array in arrays.items():
        write_idx(root / (FILES[role] + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_reads_the_official_split_scaled_and_flat(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path)
    assert (len(data.train), len(data.test)) == (12, 6)
    assert data.feature_shape == (784,) and data.num_classes == 10
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64
    assert data.feature_range == (0.0, 1.0)
    # Row-major 28x28 pixels, /255, in file order (no shuffle, no resplit).
    np.testing.assert_allclose(data.test.x[3].reshape(28, 28),
                               arrays["test-images"][3] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.train.y, arrays["train-labels"])


def test_run_config_reads_its_dataset_dir_and_ignores_test_fraction(tmp_path):
    write_fashion(tmp_path)
    cfg = RunConfig.from_mapping({"dataset": "fashion-mnist", "dataset-dir": str(tmp_path),
                                  "test-fraction": "0.5"})
    assert len(load_task_data(cfg).test) == 6


def test_missing_directory_names_it_and_how_to_get_the_files(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_fashion_mnist(tmp_path / "nowhere")
    msg = str(err.value)
    assert err.value.key == "dataset-dir"
    assert f"{str(tmp_path / 'nowhere')!r} is not a directory" in msg
    for hint in ("make data", "apt-get install dataset-fashion-mnist",
                 "github.com/zalandoresearch/fashion-mnist"):
        assert hint in msg


def test_missing_files_are_each_named(tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ConfigError) as err:
        load_fashion_mnist(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"dataset-dir: {str(tmp_path)!r} lacks ")
    assert "train-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)" in msg
    assert "train-labels" not in msg


def test_empty_dataset_dir_means_debians_path(tmp_path, monkeypatch):
    write_fashion(tmp_path)
    monkeypatch.setattr("fedpriv.tasks.fashion_mnist.DEFAULT_DIR", tmp_path)
    assert len(load_fashion_mnist("").train) == 12


def test_a_corrupt_file_is_named_under_its_key(tmp_path):
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ConfigError) as err:
        load_fashion_mnist(tmp_path)
    assert err.value.key == "dataset-dir" and str(path) in str(err.value)
    assert "needs exactly" in str(err.value)


@pytest.mark.parametrize(("role", "array", "fragment"), [
    ("train-images", np.zeros((12, 28, 27), np.uint8), "expected uint8 images of n x 28 x 28"),
    ("train-images", np.zeros((12, 28, 28), np.float32), "got float32 of 12x28x28"),
    ("train-labels", np.zeros(11, np.uint8), "11 labels, but train-images-idx3-ubyte.gz "
                                            "holds 12 images"),
    ("test-labels", np.full(6, 10, np.uint8), "labels must be in [0, 10), got 10"),
    ("test-images", np.zeros((0, 28, 28), np.uint8), "holds no images"),
])
def test_inconsistent_files_are_named(tmp_path, role, array, fragment):
    write_fashion(tmp_path)
    if role == "test-images":
        write_idx(tmp_path / (FILES["test-labels"] + ".gz"), np.zeros(0, np.uint8))
    write_idx(tmp_path / (FILES[role] + ".gz"), array)
    with pytest.raises(ConfigError) as err:
        load_fashion_mnist(tmp_path)
    assert FILES[role] in str(err.value) and fragment in str(err.value)


@pytest.mark.skipif(not DEFAULT_DIR.is_dir(),
                    reason=f"needs Debian's dataset-fashion-mnist in {DEFAULT_DIR} (make data)")
def test_debians_package_holds_the_full_balanced_set():
    data = load_fashion_mnist()
    assert (len(data.train), len(data.test)) == (60_000, 10_000)
    np.testing.assert_array_equal(np.bincount(data.train.y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test.y), [1000] * 10)
    assert data.train.x.min() == 0.0 and data.train.x.max() == 1.0
