import tomllib
from pathlib import Path

import pytest

from fedpriv.config import ConfigError, Dataset, DpMode, Model, Partition, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_app_config_in_pyproject_matches_runconfig_defaults():
    # flwr run reads [tool.flwr.app.config]; fedpriv simulate reads RunConfig.
    app_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app_cfg["config"] == RunConfig().to_flat()


def test_string_values_from_set_are_coerced():
    cfg = RunConfig.from_mapping({"rounds": "3", "alpha": "0.25", "dataset": "synthetic",
                                  "device": "cpu", "model": "logreg"})
    assert cfg.training.rounds == 3 and cfg.data.alpha == 0.25
    assert cfg.data.dataset is Dataset.SYNTHETIC and cfg.model.family is Model.LOGREG


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("rounds", "0", "rounds: must be in [1, inf), got 0"),
    ("rounds", "-3", "got -3"),
    ("rounds", "two", "rounds: must be an integer, got 'two'"),
    ("alpha", "0", "alpha: must be in (0, inf), got 0"),
    ("alpha", "nan", "alpha"),
    ("dataset", "nope", "dataset: must be one of {digits, synthetic, fashion-mnist, mnist, "
                        "fine-foods, movielens}, got 'nope'"),
    ("strategy", "mean", "strategy: must be one of {fedavg, fedprox, fedadam, fedmedian, "
                         "fedtrimmedavg, krum}, got 'mean'"),
    ("test-fraction", "1", "test-fraction: must be in (0, 1)"),
])
def test_bad_values_name_key_domain_and_value(key, value, fragment):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping({key: value})
    assert fragment in str(err.value)
    assert err.value.key == key


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping({"bogus": "1"})
    msg = str(err.value)
    assert msg.startswith("bogus: unknown key")
    for key in RunConfig.keys():
        assert key in msg


def test_model_must_fit_dataset():
    with pytest.raises(ConfigError, match="model"):
        RunConfig.from_mapping({"dataset": "synthetic", "model": "cnn"}).resolved()


@pytest.mark.parametrize("dataset", ["fashion-mnist", "mnist"])
def test_image_data_sets_default_to_the_cnn_and_dirichlet(dataset):
    cfg = RunConfig.from_mapping({"dataset": dataset}).resolved()
    assert (cfg.model.family, cfg.data.partition) == (Model.CNN, Partition.DIRICHLET)
    for model in ("mlp", "logreg"):
        chosen = RunConfig.from_mapping({"dataset": dataset, "model": model})
        assert chosen.model.family.value == model
    for partition in ("iid", "pathological"):
        RunConfig.from_mapping({"dataset": dataset, "partition": partition})


@pytest.mark.parametrize(("values", "message"), [
    ({"dataset": "synthetic", "model": "cnn"},
     "model: must be one of {logreg, mlp} for dataset=synthetic, got 'cnn'"),
    ({"dataset": "fashion-mnist", "partition": "natural"},
     "partition: must be one of {dirichlet, iid, pathological} for dataset=fashion-mnist, "
     "got 'natural'"),
    ({"dataset": "mnist", "partition": "natural"},
     "partition: must be one of {dirichlet, iid, pathological} for dataset=mnist, got "
     "'natural'"),
    ({"dataset": "digits", "dataset-dir": "/data/fmnist"},
     "dataset-dir: applies to dataset=fashion-mnist or movielens only, got dataset=digits "
     "(dataset-dir='/data/fmnist')"),
    ({"dataset": "mnist", "dataset-dir": "/data/fmnist"},
     "dataset-dir: applies to dataset=fashion-mnist or movielens only, got dataset=mnist"),
])
def test_dataset_combinations_name_the_allowed_values(values, message):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping(values)
    assert message in str(err.value)


def test_dataset_dir_is_a_plain_string_key():
    cfg = RunConfig.from_mapping({"dataset": "fashion-mnist", "dataset-dir": "/srv/fmnist"})
    assert cfg.data.dataset is Dataset.FASHION_MNIST and cfg.data.dataset_dir == "/srv/fmnist"
    assert RunConfig.from_mapping(cfg.to_flat()) == cfg
    assert RunConfig().data.dataset_dir == ""


def test_resolved_fills_auto_and_round_trips_through_flat_keys():
    cfg = RunConfig.from_mapping({"dataset": "synthetic"}).resolved()
    assert cfg.resolved_model is Model.LOGREG
    assert cfg.data.resolved_partition is Partition.NATURAL
    assert RunConfig.from_mapping(cfg.to_flat()) == cfg


def test_cohort_size_zero_means_everyone():
    assert RunConfig.from_mapping({"clients": 7}).training.cohort_size == 7
    assert RunConfig.from_mapping({"clients": 7, "clients-per-round": 3}).training.cohort_size == 3
    with pytest.raises(ConfigError, match="clients-per-round"):
        RunConfig.from_mapping({"clients": 3, "clients-per-round": 5}).resolved()


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_rules_refuse_sums_and_say_why(strategy):
    with pytest.raises(ConfigError, match="needs each client's own update, but secure"):
        RunConfig.from_mapping({"strategy": strategy, "secagg": "true"})
    with pytest.raises(ConfigError, match="user-level DP gives the strategy only"):
        RunConfig.from_mapping({"strategy": strategy, "dp-mode": "user"})
    RunConfig.from_mapping({"strategy": strategy, "dp-mode": "record"})  # fine


@pytest.mark.parametrize(("values", "key", "fragment"), [
    ({}, "secagg", "dp-mode=distributed needs secagg=true"),
    ({"secagg": "true", "clip": "adaptive"}, "clip",
     "dp-mode=distributed needs clip=fixed (every client must scale by the same public C; "
     "adaptive clipping is dp-mode=user only), got clip=adaptive"),
    ({"secagg": "true", "strategy": "krum"}, "strategy",
     "krum needs each client's own update, but distributed DP gives the server only the "
     "noised sum"),
    ({"secagg": "true", "ddp-bits": "4"}, "ddp-bits",
     "must be 0 (auto) or in [5, 64] (the sum of 10 clients' count slots must fit), got 4"),
    ({"secagg": "true", "ddp-bits": "65"}, "ddp-bits", "must be in [0, 64], got 65"),
    ({"secagg": "true", "ddp-mechanism": "gauss"}, "ddp-mechanism",
     "must be one of {skellam, ddg}, got 'gauss'"),
    ({"secagg": "true", "ddp-min-survivors": "11"}, "ddp-min-survivors",
     "must be in [0, cohort = 10]"),
    ({"secagg": "true", "ddp-min-survivors": "9"}, "ddp-min-survivors",
     "must be at most the 6 survivors secure aggregation guarantees for a cohort of 10"),
])
def test_distributed_dp_config_errors_name_key_domain_and_value(values, key, fragment):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping({"dp-mode": "distributed", **values})
    assert fragment in str(err.value)
    assert err.value.key == key


def test_distributed_dp_accepts_its_keys():
    cfg = RunConfig.from_mapping({"dp-mode": "distributed", "secagg": "true",
                                  "ddp-mechanism": "ddg", "ddp-bits": "32",
                                  "ddp-min-survivors": "6", "target-epsilon": "4"})
    assert cfg.privacy.ddp_bits == 32 and cfg.privacy.ddp_min_survivors == 6
    assert RunConfig.from_mapping(cfg.to_flat()) == cfg


# ------------------------------------------------------------------ sections
def test_every_key_lives_in_exactly_one_frozen_section():
    import dataclasses

    from fedpriv.config import SECTIONS

    seen: dict[str, str] = {}
    for name, section in SECTIONS.items():
        assert section.__dataclass_params__.frozen and hasattr(section, "__slots__"), name
        assert all(f.kw_only for f in dataclasses.fields(section)), name
        for key in RunConfig.keys():
            if RunConfig.keys()[key][0] == name:
                assert key not in seen, (key, seen.get(key), name)
                seen[key] = name
    assert set(seen) == set(RunConfig().to_flat())
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.privacy.delta = 0.5  # type: ignore[misc]


def test_a_flat_round_trip_keeps_every_section():
    flat = {"rounds": 4, "secagg": True, "clients": 6, "secagg-bits": 16, "model": "cnn",
            "dp-mode": "user", "clip": "adaptive", "device": "cpu", "seq-len": 32}
    cfg = RunConfig.from_mapping(flat)
    assert (cfg.training.rounds, cfg.secagg.enabled, cfg.secagg.bits) == (4, True, 16)
    assert cfg.model.family is Model.CNN and cfg.data.seq_len == 32
    assert RunConfig.from_mapping(cfg.to_flat()) == cfg
    assert {k: cfg.to_flat()[k] for k in flat} == {**flat, "model": "cnn", "dp-mode": "user",
                                                   "clip": "adaptive", "device": "cpu"}


def test_a_section_refuses_its_own_bad_values_on_its_own():
    from fedpriv.config import PrivacyConfig, SecAggConfig, TrainingConfig

    with pytest.raises(ConfigError, match="dropout-rate: simulated dropouts need secagg=true"):
        SecAggConfig(dropout_rate=0.3)
    with pytest.raises(ConfigError, match="clients-per-round"):
        TrainingConfig(clients=3, clients_per_round=4)
    with pytest.raises(ConfigError, match=r"delta: must be in \(0, 1\), got 0"):
        PrivacyConfig(delta=0.0)
    with pytest.raises(ConfigError, match="secagg-threshold"):
        SecAggConfig(enabled=True, threshold=0.4)


def test_rules_across_sections_are_checked_by_the_run_config():
    from fedpriv.config import PrivacyConfig, TrainingConfig

    privacy = PrivacyConfig(dp_mode=DpMode.DISTRIBUTED)
    with pytest.raises(ConfigError, match="secagg: dp-mode=distributed needs secagg=true"):
        RunConfig(privacy=privacy)
    with pytest.raises(ConfigError, match="min-replies"):
        RunConfig.from_mapping({"clients": 2, "min-replies": 3})
    with pytest.raises(TypeError, match="RunConfig.privacy must be a PrivacyConfig"):
        RunConfig(privacy=TrainingConfig())  # type: ignore[arg-type]


def test_with_values_checks_like_from_mapping():
    cfg = RunConfig()
    assert cfg.with_values(run_dir="/x", rounds=2).deployment.run_dir == "/x"
    assert cfg.with_values(secagg=True, clients=6).secagg.enabled
    with pytest.raises(ConfigError, match="rounds: must be in"):
        cfg.with_values(rounds=0)
    with pytest.raises(ConfigError, match="no-such-key: unknown key"):
        cfg.with_values(no_such_key=1)


def test_privacy_and_secagg_stay_pure():
    # The math and the protocol never read the run config: callers hand them numbers or
    # a section (duck-typed), so they can be used (and audited) without the platform.
    import ast

    for package in ("privacy", "secagg"):
        for path in (ROOT / "fedpriv" / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    assert not name.startswith(("fedpriv.config", "server", "client",
                                                "strategies", "simulations")), (path, name)


def test_a_received_config_is_parsed_once_yet_each_value_keeps_its_own_validation():
    """Clients parse the same config record every round, so the parse is kept; Python's
    ``True == 1 == 1.0`` must not let a value the validation refuses borrow the parse of
    an equal value it accepts."""
    from fedpriv.messages import config_from_record

    first, _ = config_from_record({"rounds": 1, "secagg": True})
    again, server_round = config_from_record({"rounds": 1, "secagg": True, "server-round": 4})
    assert again is first and server_round == 4
    with pytest.raises(ConfigError, match="rounds: must be an integer, got True"):
        config_from_record({"rounds": True, "secagg": True})
    with pytest.raises(ConfigError, match="secagg: must be true or false, got 1.0"):
        config_from_record({"rounds": 1, "secagg": 1.0})
    # equal in Python, different records: each gets its own parse
    assert config_from_record({"run-id": [1, 2]})[0].deployment.run_id == "[1, 2]"
    assert config_from_record({"run-id": [1.0, 2.0]})[0].deployment.run_id == "[1.0, 2.0]"
    assert config_from_record({"run-id": 0.0})[0].deployment.run_id == "0.0"
    assert config_from_record({"run-id": -0.0})[0].deployment.run_id == "-0.0"
