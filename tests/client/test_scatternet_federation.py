"""ScatterNet + linear learns under record-level DP-SGD in a small in-process federation."""


import numpy as np

from fedpriv.config import RunConfig
from fedpriv.tasks import write_idx
from fedpriv.tasks.fashion_mnist import FILES


def _write_bars(root, *, n_train, n_test, seed=0):
    """Learnable 28x28 images: class c is a bright bar at row 2 + 2c (or column, odd c)."""
    rng = np.random.default_rng(seed)

    def images(n):
        labels = np.arange(n) % 10
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            if c % 2:
                x[i, 4:24, 2 + 2 * c:4 + 2 * c] = 230
            else:
                x[i, 2 + 2 * c:4 + 2 * c, 4:24] = 230
        return x, labels.astype(np.uint8)

    (train_x, train_y), (test_x, test_y) = images(n_train), images(n_test)
    for role, array in {"train-images": train_x, "train-labels": train_y,
                        "test-images": test_x, "test-labels": test_y}.items():
        write_idx(root / FILES[role], array)


def test_scatternet_learns_under_record_level_dp_in_a_federation(tmp_path):
    from bench.loopback import LoopbackGrid, task_identity
    from client.app import app as client_app
    from server.federation import run_federation
    from server.reporting import LogReporter
    from server.rundir import RunDirectory

    data_dir = tmp_path / "fashion"
    data_dir.mkdir()
    _write_bars(data_dir, n_train=120, n_test=40)
    cfg = RunConfig.from_mapping({
        "dataset": "fashion-mnist", "dataset-dir": str(data_dir), "model": "scatternet",
        "partition": "iid", "clients": 3, "rounds": 3, "local-epochs": 2,
        "batch-size": 20, "lr": 2.0, "momentum": 0.5, "clip-norm": 0.1,
        "dp-mode": "record", "noise-multiplier": 1.0, "reproducible": True}).resolved()
    cfg = cfg.with_values(run_dir=str(tmp_path / "run"))
    nodes = {i + 1: {"partition-id": i, "num-partitions": 3} for i in range(3)}
    run_dir = RunDirectory(tmp_path / "run").create()
    with task_identity():
        summary = run_federation(LoopbackGrid(client_app, nodes), cfg, run_dir,
                                 scenario="t", reporter=LogReporter())
    assert summary["status"] == "completed"
    assert 0 < summary["epsilon"]["federation"] < 100
    assert summary["initial_accuracy"] < 0.3
    assert summary["final_accuracy"] >= 0.8, summary
    # only the linear layer travels and is saved
    assert set(run_dir.load_model()) == {"head.weight", "head.bias"}
