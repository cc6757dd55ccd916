import gzip

import numpy as np
import pytest

from fedpriv.tasks import DataFileError, read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_plain_and_gzipped(tmp_path, name, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((5, 3, 4)) * 100).astype(dtype)  # (n, rows, cols)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name, ndim=3)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz")
                                                 else b"\x00\x00")


def test_header_is_big_endian_as_lecun_specifies(tmp_path):
    # The MNIST page's example: magic 0x00000801 then the count, then one byte per label.
    body = bytes(i % 256 for i in range(258))
    (tmp_path / "labels").write_bytes(bytes([0, 0, 8, 1, 0, 0, 1, 2]) + body)
    labels = read_idx(tmp_path / "labels", ndim=1)
    assert labels.shape == (258,) and labels.dtype == np.uint8 and labels[257] == 1


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    write_idx(tmp_path / "labels", np.arange(4, dtype=np.uint8), compress=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [0, 1, 2, 3])


def _labels_bytes(n=4):
    return bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(range(n))


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"\x00\x00", "too short for an IDX header"),
    (b"\x01\x02\x08\x01" + _labels_bytes()[4:], "bad IDX magic number 0x01020801"),
    (bytes([0, 0, 0x07, 1]) + _labels_bytes()[4:], "type byte must be one of"),
    (bytes([0, 0, 8, 0]), "IDX header has 0 dimensions"),
    (bytes([0, 0, 8, 3, 0, 0]), "too short for an IDX header with 3 dimensions"),
    (_labels_bytes()[:-1], "11 bytes (decompressed), but its header 4 of uint8 needs "
                           "exactly 12"),
    (_labels_bytes() + b"\x00", "13 bytes"),
    (b"\x1f\x8b" + b"not really gzip", "corrupt gzip data"),
    # mtime=0: the same bytes (and test id) in every process, as pytest-xdist needs
    (gzip.compress(_labels_bytes(), mtime=0)[:-6], "corrupt gzip data"),
])
def test_corrupt_files_are_named_with_what_is_wrong(tmp_path, raw, fragment):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataFileError) as err:
        read_idx(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_unexpected_dimensions_are_named(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataFileError, match=r"labels: IDX header has 1 dimensions, expected 3"):
        read_idx(tmp_path / "labels", ndim=3)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataFileError, match="nope-idx1-ubyte: cannot read"):
        read_idx(tmp_path / "nope-idx1-ubyte")


def test_write_refuses_dtypes_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="array dtype must be one of .* got int64"):
        write_idx(tmp_path / "x", np.zeros(2, dtype=np.int64))
