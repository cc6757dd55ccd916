"""One bad value on one device never reaches the global model."""

import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from bench.loopback import LoopbackGrid, task_identity
from client.app import app as client_app
from fedpriv.config import RunConfig
from fedpriv.tasks import LocalDataError, client_dataset, load_npz_dir
from server.federation import run_federation
from server.reporting import LogReporter
from server.rundir import RunDirectory


def write_devices(root, n, poison=None):
    cfg = RunConfig.from_mapping({"clients": n, "partition": "iid"}).resolved()
    dirs = []
    for i in range(n):
        part = client_dataset(cfg, i, n)
        x = part.x.copy()
        if poison is not None and i == n - 1:
            x[3, 17] = poison
        d = root / f"device-{i}"
        d.mkdir(parents=True)
        np.savez(d / "data.npz", x=x, y=part.y)
        dirs.append(d)
    return dirs


def federate(tmp_path, name, dirs, **extra):
    run_dir = RunDirectory(tmp_path / name).create()
    cfg = RunConfig.from_mapping({"rounds": 2, "clients": len(dirs), "local-epochs": 1,
                                  "reproducible": True, **extra,
                                  "run-dir": str(run_dir.path)}).resolved()
    nodes = {i + 1: {"data-dir": str(d)} for i, d in enumerate(dirs)}
    with task_identity():
        summary = run_federation(LoopbackGrid(client_app, nodes), cfg, run_dir,
                                 scenario="t", reporter=LogReporter())
    return run_dir.path, summary


def test_a_poisoned_device_is_dropped_and_the_model_stays_finite(tmp_path):
    # One NaN pixel on one device (inf takes the same path: see the refusal test).
    good = write_devices(tmp_path / "good", 4)[:3]
    bad = write_devices(tmp_path / "bad", 4, poison=math.nan)[3]
    _, clean = federate(tmp_path, "clean", good)
    path, poisoned = federate(tmp_path, "poisoned", [*good, bad])
    assert poisoned["status"] == "completed"
    model = load_file(path / "model.safetensors")
    assert all(np.isfinite(v).all() for v in model.values())
    assert abs(poisoned["final_accuracy"] - clean["final_accuracy"]) <= 0.02


@pytest.mark.parametrize(("value", "match"), [
    (math.nan, r"data.npz: array x has 1 non-finite value\(s\) \(NaN or inf\), the first "
               r"at index \(3, 17\)"),
    (-math.inf, r"non-finite value\(s\).*index \(3, 17\)"),
    (16.0, r"data.npz: array x must lie in \[0, 1\] for this task, got 16 at index "
           r"\(3, 17\)"),
])
def test_bad_local_data_is_refused_naming_file_array_and_index(tmp_path, value, match):
    d = write_devices(tmp_path, 2, poison=value)[1]
    with pytest.raises(LocalDataError, match=match):
        load_npz_dir(d, feature_shape=(64,), num_classes=10, feature_range=(0.0, 1.0))


def test_an_empty_npz_is_refused_by_name(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 64)), y=np.zeros(0, dtype=np.int64))
    with pytest.raises(LocalDataError, match="empty.npz: holds no examples"):
        load_npz_dir(tmp_path, feature_shape=(64,), num_classes=10)


def test_a_round_with_fewer_usable_replies_than_min_replies_is_skipped(tmp_path):
    # Two of four devices are poisoned: 2 usable replies < min-replies 3 in every round.
    good = write_devices(tmp_path / "good", 4)[:2]
    bad = write_devices(tmp_path / "bad", 4, poison=math.nan)[3]
    bad2 = write_devices(tmp_path / "bad2", 4, poison=math.inf)[3]
    path, summary = federate(tmp_path, "few", [*good, bad, bad2], **{"min-replies": 3})
    assert summary["status"] == "completed"
    rounds = RunDirectory(path).read_metrics()
    assert [r["skipped"] for r in rounds] == ["2 usable replies < min-replies 3"] * 2
    assert summary["rounds_aggregated"] == 0 and summary["rounds"] == 2
    initial, final = (load_file(path / f) for f in ("model-initial.safetensors",
                                                     "model.safetensors"))
    assert all(np.array_equal(initial[k], final[k]) for k in initial)


def test_replies_whose_bytes_are_not_the_models_shape_are_rejected_whatever_they_claim():
    """The server checks the bytes it will average, not the Array's own shape and dtype
    fields, which a malicious client writes as it likes; only the honest update (all
    ones, weight 1) reaches the model."""
    import io

    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    from fedpriv.messages import METRICS, UPDATE, UPDATE_WEIGHT
    from strategies.factory import build_strategy
    from strategies.update_mean import UpdateMean
    from strategies.updates import synthetic_reply
    from tests.support.strategy import around

    def lying(values, shape, dtype):  # metadata that matches the model, bytes that do not
        buf = io.BytesIO()
        np.save(buf, values, allow_pickle=False)
        return Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=buf.getvalue())

    def npz():
        buf = io.BytesIO()
        np.savez(buf, w=np.ones((3, 2), np.float32))
        return buf.getvalue()

    def reply(weight, bias):
        return synthetic_reply(None, RecordDict({
            UPDATE: ArrayRecord({"0.weight": weight, "0.bias": bias}),
            METRICS: MetricRecord({UPDATE_WEIGHT: 1.0})}))

    strategy, _ = around(UpdateMean(build_strategy(RunConfig.from_mapping({"clients": 4}))))
    bias = Array(np.ones(3, np.float32))
    replies = [
        reply(Array(np.ones((3, 2), np.float32)), bias),  # the one good reply
        reply(lying(np.ones(6, np.float32), (3, 2), "float32"), bias),
        reply(lying(np.ones((3, 2), np.int64), (3, 2), "float32"), bias),
        reply(lying(np.full((3, 2), np.nan, np.float32), (3, 2), "float32"), bias),
        # bytes that are no array at all, or another serialisation, or an archive: the
        # reply is rejected, the server does not stop
        reply(Array(dtype="float32", shape=(3, 2), stype="numpy.ndarray", data=b"junk"), bias),
        reply(Array(dtype="float32", shape=(3, 2), stype="torch.tensor",
                    data=lying(np.ones((3, 2), np.float32), (3, 2), "float32").data), bias),
        reply(Array(dtype="float32", shape=(3, 2), stype="numpy.ndarray", data=npz()), bias),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert len(strategy.last_rejected) == 6
    assert strategy.last_replies == 1
    assert arrays is not None
    assert np.array_equal(arrays["0.weight"].numpy(), np.ones((3, 2), np.float32))


def test_the_reference_shapes_follow_the_global_model_even_when_it_is_edited_in_place():
    from flwr.app import Array

    from strategies.factory import build_strategy
    from strategies.update_mean import UpdateMean
    from tests.support.strategy import around

    strategy, current = around(UpdateMean(build_strategy(RunConfig.from_mapping({}))))
    assert strategy._reference_specs()["0.weight"][0] == (3, 2)
    current["0.weight"] = Array(np.zeros((4, 2), np.float32))
    assert strategy._reference_specs()["0.weight"][0] == (4, 2)
