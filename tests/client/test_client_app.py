import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from client.app import app as client_app
from fedpriv.messages import (
    ARRAYS,
    CONFIG,
    EVAL_ACCURACY,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
)
from fedpriv.tasks import build_task_model, client_dataset, load_task_data
from tests.support.grid import instruction


def context(node_config):
    return Context(run_id=7, node_id=3, node_config=node_config, state=RecordDict(),
                   run_config={})


def train_message(cfg, model, message_type="train", server_round=1):
    config = ConfigRecord({**cfg.to_flat(), SERVER_ROUND: server_round})
    content = RecordDict({ARRAYS: ArrayRecord(model.state_dict()), CONFIG: config})
    return instruction(content, dst_node_id=3, message_type=message_type)


SIM_NODE = {"partition-id": 1, "num-partitions": 4}


def test_train_reply_is_a_trained_model_with_metrics(small_cfg):
    model = build_task_model(small_cfg, load_task_data(small_cfg))
    reply = client_app(train_message(small_cfg, model), context(SIM_NODE))
    assert not reply.has_error()
    assert reply.metadata.reply_to_message_id != ""
    sent = model.state_dict()
    got = reply.content[ARRAYS].to_torch_state_dict()
    assert got.keys() == sent.keys()
    assert all(got[k].shape == sent[k].shape for k in sent)
    assert any(not np.allclose(got[k].numpy(), sent[k].numpy()) for k in sent)
    metrics = reply.content[METRICS]
    assert metrics[NUM_EXAMPLES] == len(client_dataset(small_cfg, 1, 4))
    assert np.isfinite(metrics[TRAIN_LOSS])


def test_train_is_reproducible_for_the_same_round_and_differs_across_rounds(small_cfg):
    model = build_task_model(small_cfg, load_task_data(small_cfg))
    a = client_app(train_message(small_cfg, model), context(SIM_NODE))
    b = client_app(train_message(small_cfg, model), context(SIM_NODE))
    c = client_app(train_message(small_cfg, model, server_round=2), context(SIM_NODE))
    wa, wb, wc = (m.content[ARRAYS].to_numpy_ndarrays() for m in (a, b, c))
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))


def test_evaluate_reports_accuracy_on_local_data(small_cfg):
    model = build_task_model(small_cfg, load_task_data(small_cfg))
    reply = client_app(train_message(small_cfg, model, "evaluate"), context(SIM_NODE))
    assert 0.0 <= reply.content[METRICS][EVAL_ACCURACY] <= 1.0


def test_deployed_client_trains_on_its_npz_directory(small_cfg, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "part.npz", x=rng.random((20, 64)), y=rng.integers(0, 10, 20))
    model = build_task_model(small_cfg, load_task_data(small_cfg))
    reply = client_app(train_message(small_cfg, model), context({"data-dir": str(tmp_path)}))
    assert reply.content[METRICS][NUM_EXAMPLES] == 20


def test_node_without_data_says_what_to_set(small_cfg):
    model = build_task_model(small_cfg, load_task_data(small_cfg))
    with pytest.raises(ValueError, match="set data-dir"):
        client_app(train_message(small_cfg, model), context({}))


def test_client_refuses_a_round_past_its_own_budget(tmp_path):
    from fedpriv.config import RunConfig
    from fedpriv.messages import CLIENT_EPSILON, PRIVACY, REFUSED, REFUSED_REASON, UPDATE

    cfg = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "partition": "iid",
                                  "dp-mode": "user", "client-max-epsilon": 5.0,
                                  "run-dir": str(tmp_path)}).resolved()
    model = build_task_model(cfg, load_task_data(cfg))
    first = client_app(train_message(cfg, model), context(SIM_NODE))
    assert not first.content[PRIVACY][REFUSED]
    assert 0 < first.content[PRIVACY][CLIENT_EPSILON] < 5.0
    assert UPDATE in first.content.array_records
    second = client_app(train_message(cfg, model, server_round=2), context(SIM_NODE))
    privacy = second.content[PRIVACY]
    assert privacy[REFUSED] and "client-max-epsilon 5" in privacy[REFUSED_REASON]
    assert not second.content.array_records  # nothing about its data leaves the device
    ledger = tmp_path / "clients" / "client-1" / "ledger.sqlite"
    from fedpriv.privacy import PrivacyLedger

    with PrivacyLedger.open(ledger) as led:
        assert [r for r, _ in led.events()] == [1]  # the refused round spent nothing


def test_node_config_budget_and_device_override_the_server(tmp_path):
    from client.data import node_overrides
    from fedpriv.config import Device, RunConfig

    cfg = RunConfig.from_mapping({"client-max-epsilon": 10.0, "device": "auto"})
    own = node_overrides(cfg, {"client-max-epsilon": 3.0, "device": "cpu"})
    assert own.client_max_epsilon == 3.0 and own.device is Device.CPU
    # The server cannot raise a device's own limit.
    assert node_overrides(cfg, {"client-max-epsilon": 50.0}).client_max_epsilon == 10.0
