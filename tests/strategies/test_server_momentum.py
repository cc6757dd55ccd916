"""Server momentum (FedAvgM, Hsu et al. 2019) around an aggregation rule."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord

from fedpriv.config import ConfigError, RunConfig
from server.rundir import RunDirectory
from strategies.server_momentum import ServerMomentum
from strategies.updates import numpy_record


class Scripted:
    """A stand-in rule that returns the models it is given, one per round."""

    def __init__(self, models):
        self.models = list(models)

    def configure_train(self, server_round, arrays, config, grid):
        return []

    def aggregate_train(self, server_round, replies):
        model = self.models.pop(0)
        return (None if model is None else numpy_record(model)), MetricRecord({})


def _rounds(strategy, start, n):
    """Run ``n`` rounds from ``start``; the global model after each."""
    w, out = numpy_record(start), []
    for r in range(1, n + 1):
        strategy.configure_train(r, w, None, None)
        new, _ = strategy.aggregate_train(r, [])
        w = new if new is not None else w
        out.append({k: w[k].numpy() for k in w.keys()})
    return out


def test_the_fedavgm_recurrence_against_a_hand_computation():
    # Prepare: the rule proposes w_agg = w_t + 1 each round (Delta_t = 1)
    beta, eta = 0.5, 2.0
    start = {"w": np.zeros(3, np.float32)}
    inner = Scripted([])
    sm = ServerMomentum(inner, momentum=beta, learning_rate=eta)
    w, got = numpy_record(start), []
    for r in range(1, 4):
        sm.configure_train(r, w, None, None)
        inner.models.append({"w": w["w"].numpy() + 1.0})
        w, _ = sm.aggregate_train(r, [])
        got.append(float(w["w"].numpy()[0]))
    # Assert: v = 1, 1.5, 1.75; w = 2, 5, 8.5
    assert got == pytest.approx([2.0, 5.0, 8.5])
    assert sm.velocity["w"] == pytest.approx(np.full(3, 1.75))
    assert w["w"].numpy().dtype == np.float32


def test_beta_zero_eta_one_is_the_wrapped_rule():
    models = [{"w": np.array([1.0, -2.0])}, {"w": np.array([0.5, 3.0])}]
    got = _rounds(ServerMomentum(Scripted(models), momentum=0.0), {"w": np.zeros(2)}, 2)
    assert [g["w"].tolist() for g in got] == [[1.0, -2.0], [0.5, 3.0]]


def test_a_skipped_round_keeps_model_and_velocity():
    models = [{"w": np.array([1.0])}, None, {"w": np.array([1.0])}]
    sm = ServerMomentum(Scripted(models), momentum=0.9)
    got = _rounds(sm, {"w": np.zeros(1)}, 3)
    # round 2 skipped: w stays 1, v stays 1; round 3: Delta = 0, v = 0.9, w = 1.9
    assert [float(g["w"][0]) for g in got] == pytest.approx([1.0, 1.0, 1.9])


def test_integer_parameters_pass_through():
    models = [{"w": np.array([1.0]), "n": np.array([7], np.int64)}]
    got = _rounds(ServerMomentum(Scripted(models), momentum=0.9),
                  {"w": np.zeros(1), "n": np.array([3], np.int64)}, 1)
    assert got[0]["n"].tolist() == [7] and "n" not in ServerMomentum(Scripted([]),
                                                                   momentum=0.1).velocity


@pytest.mark.parametrize(("kw", "word"), [({"momentum": 1.0}, "momentum"),
                                          ({"momentum": -0.1}, "momentum"),
                                          ({"momentum": 0.5, "learning_rate": 0.0},
                                           "learning_rate")])
def test_out_of_range_settings_are_refused(kw, word):
    with pytest.raises(ValueError, match=word):
        ServerMomentum(Scripted([]), **kw)


def test_config_refuses_server_momentum_with_fedadam():
    with pytest.raises(ConfigError, match="server-momentum"):
        RunConfig.from_mapping({"strategy": "fedadam", "server-momentum": 0.9})


@pytest.mark.parametrize("values", [{"secagg": "true", "dp-mode": "record"},
                                    {"secagg": "true", "dp-mode": "distributed"},
                                    {"dp-mode": "user"}, {}])
def test_it_wraps_the_whole_chain_under_every_dp_mode_and_secagg(values):
    # Outermost, so it steps on the released model: after DP noise and unmasking.
    from server.federation import _aggregation
    from server.secagg import SecAggStrategy

    cfg = RunConfig.from_mapping({**values, "server-momentum": 0.9, "clients": 6}).resolved()
    plan = None
    if values.get("dp-mode") == "distributed":
        from fedpriv.ddp_plan import distributed_plan, model_dimension

        plan = distributed_plan(cfg, model_dimension(cfg))
    chain = _aggregation(cfg, plan)
    assert isinstance(chain, ServerMomentum) and chain.momentum == 0.9
    assert isinstance(chain.inner, SecAggStrategy) == ("secagg" in values)
    assert not isinstance(_aggregation(cfg.with_values(server_momentum=0.0), plan),
                          ServerMomentum)


def test_a_run_checkpoints_its_velocity(tmp_path):
    from tests.server.test_dp_federation import run

    path, summary = run(tmp_path, rounds=2, clients=2, **{"server-momentum": 0.9})
    assert summary["status"] == "completed" and summary["rounds_aggregated"] == 2
    _, model, state, _ = RunDirectory(path).read_state(RunDirectory.STATE)
    velocity = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith("velocity/")}
    assert set(velocity) == set(model) and any(np.abs(v).max() > 0 for v in velocity.values())


def test_an_empty_record_is_handled():
    sm = ServerMomentum(Scripted([{}]), momentum=0.5)
    sm.configure_train(1, ArrayRecord(), None, None)
    new, _ = sm.aggregate_train(1, [])
    assert new is not None and list(new.keys()) == []
