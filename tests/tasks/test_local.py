import numpy as np
import pytest

from fedpriv.tasks import LocalDataError, load_npz_dir


def write(path, **arrays):
    np.savez(path, **arrays)


def test_loads_and_concatenates_files_in_name_order(tmp_path):
    write(tmp_path / "b.npz", x=np.ones((2, 4)), y=np.array([1, 2]))
    write(tmp_path / "a.npz", x=np.zeros((3, 4)), y=np.array([0, 0, 3]))
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_npz_dir(tmp_path, feature_shape=(4,), num_classes=4)
    assert len(data) == 5
    np.testing.assert_array_equal(data.y, [0, 0, 3, 1, 2])
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"x": np.zeros((2, 4))}, "missing array(s) ['y']"),
    ({"x": np.zeros((2, 5)), "y": np.zeros(2, dtype=int)}, "expected x of shape (n, 4)"),
    ({"x": np.zeros((2, 4)), "y": np.zeros(3, dtype=int)}, "expected x of shape"),
    ({"x": np.zeros((2, 4)), "y": np.array([0.5, 1.0])}, "y must be integer labels"),
    ({"x": np.zeros((2, 4)), "y": np.array([0, 9])}, "labels must be in [0, 4)"),
])
def test_malformed_files_are_named(tmp_path, arrays, fragment):
    write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(LocalDataError) as err:
        load_npz_dir(tmp_path, feature_shape=(4,), num_classes=4)
    assert fragment in str(err.value) and "bad.npz" in str(err.value)


def test_pickled_objects_are_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", x=np.array([object()], dtype=object), y=np.array([0]))
    with pytest.raises(LocalDataError, match="evil.npz"):
        load_npz_dir(tmp_path, feature_shape=(), num_classes=1)


def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(LocalDataError, match="is not a directory"):
        load_npz_dir(tmp_path / "nope", feature_shape=(4,), num_classes=4)
    with pytest.raises(LocalDataError, match="holds no .npz files"):
        load_npz_dir(tmp_path, feature_shape=(4,), num_classes=4)
