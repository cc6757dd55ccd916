
import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from bench.loopback import instruction
from client.app import app as client_app
from fedpriv.config import RunConfig
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


def context(node_config):
    return Context(run_id=7, node_id=3, node_config=node_config, state=RecordDict(),
                   run_config={})


def train_message(cfg, model, message_type="train", server_round=1):
    config = ConfigRecord({**cfg.to_flat(), SERVER_ROUND: server_round})
    content = RecordDict({ARRAYS: ArrayRecord(model.state_dict()), CONFIG: config})
    return instruction(content, dst_node_id=3, message_type=message_type)


SIM_NODE = {"partition-id": 1, "num-partitions": 4}


def device_data(tmp_path):
    """A deployed device's data directory: one .npz of 40 digits-shaped examples."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "part.npz", x=rng.random((40, 64)), y=rng.integers(0, 10, 40))
    return data


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


def test_reproducible_training_repeats_for_the_same_round_and_differs_across_rounds(
        small_cfg):
    cfg = small_cfg.with_values(reproducible=True)
    model = build_task_model(cfg, load_task_data(cfg))
    a = client_app(train_message(cfg, model), context(SIM_NODE))
    b = client_app(train_message(cfg, model), context(SIM_NODE))
    c = client_app(train_message(cfg, model, server_round=2), context(SIM_NODE))
    wa, wb, wc = (m.content[ARRAYS].to_numpy_ndarrays() for m in (a, b, c))
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))


@pytest.mark.parametrize("reproducible", [False, True])
def test_record_level_sampling_and_noise_are_secret_unless_reproducible(
        tmp_path, reproducible):
    # Same config, seed, round and client: the server knows all of these, so without
    # `reproducible` the minibatches and the noise must still differ between two runs.
    cfg = RunConfig.from_mapping({
        "clients": 4, "local-epochs": 1, "partition": "iid", "dp-mode": "record",
        "noise-multiplier": 1.0, "reproducible": reproducible, "lr": 0.1}).resolved()
    model = build_task_model(cfg, load_task_data(cfg))
    replies = []
    for name in ("a", "b"):
        run_cfg = cfg.with_values(run_dir=str(tmp_path / name))
        replies.append(client_app(train_message(run_cfg, model), context(SIM_NODE)))
    wa, wb = (r.content[ARRAYS].to_numpy_ndarrays() for r in replies)
    same = all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert same is reproducible


@pytest.mark.parametrize("consent", [None, False, True, "true"])
def test_a_server_cannot_make_a_deployed_nodes_noise_predictable(tmp_path, consent):
    # A malicious server sends reproducible = true and a seed it knows: seeded from them,
    # the node's sampling and noise would be the server's to subtract. A deployed node
    # keeps them secret unless its own node config consents.
    data = device_data(tmp_path)
    cfg = RunConfig.from_mapping({
        "clients": 4, "local-epochs": 1, "dp-mode": "record", "noise-multiplier": 1.0,
        "reproducible": True, "seed": 4242, "lr": 0.1}).resolved()
    model = build_task_model(cfg, load_task_data(cfg))
    weights = []
    for name in ("a", "b"):  # two devices with the same data, or one asked twice afresh
        node = {"data-dir": str(data), "ledger-path": str(tmp_path / name / "ledger.sqlite")}
        if consent is not None:
            node["reproducible"] = consent
        reply = client_app(train_message(cfg, model), context(node))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        weights.append(reply.content[ARRAYS].to_numpy_ndarrays())
    same = all(np.array_equal(x, y) for x, y in zip(*weights, strict=True))
    assert same is (consent in (True, "true"))


def test_only_a_deployed_node_under_dp_overrides_the_servers_reproducible():
    from client.data import node_overrides

    def applied(dp_mode, node):
        extra = {"record-central": {"record-sampling-rate": 0.1},
                 "distributed": {"secagg": True}}.get(dp_mode, {})
        cfg = RunConfig.from_mapping({"dp-mode": dp_mode, "reproducible": True, **extra})
        return node_overrides(cfg, node).training.reproducible

    device = {"data-dir": "/data"}
    for mode in ("record", "record-central", "user", "distributed"):
        assert applied(mode, device) is False, mode
        assert applied(mode, {**device, "reproducible": True}) is True, mode
        assert applied(mode, {**device, "reproducible": "false"}) is False, mode
        assert applied(mode, SIM_NODE) is True, mode  # the operator runs both sides
        # a node with a partition id and its own data is a device
        assert applied(mode, {**SIM_NODE, **device}) is False, mode
    assert applied("none", device) is True  # no DP, nothing to keep secret


def test_noise_generator_is_os_seeded_unless_reproducible():
    from client.privacy import privacy_generator

    cfg = RunConfig.from_mapping({"dp-mode": "record"})
    draws = [torch.randn(8, generator=privacy_generator(cfg, "cpu", 1, 1, 2))
             for _ in range(2)]
    assert not torch.equal(*draws)
    seeded = cfg.with_values(reproducible=True)
    draws = [torch.randn(8, generator=privacy_generator(seeded, "cpu", 1, 1, 2))
             for _ in range(2)]
    assert torch.equal(*draws)


def test_opacus_samples_at_the_recorded_rate_and_takes_noise_only_steps():
    # q = 1 / ceil(n / B) is what Opacus' Poisson loader uses; with a tiny q most Poisson
    # batches are empty, and each of those must be a noise-only step, not a crash.
    from client.privacy import dp_sgd_train, planned_event, privacy_generator
    from fedpriv.privacy import DpSgdEvent

    for ghost in (True, False):
        cfg = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "dp-mode": "record",
                                      "batch-size": 1, "ghost-clipping": ghost}).resolved()
        data = client_dataset(cfg, 0, 4).subset(np.arange(40))
        event = planned_event(cfg, len(data), cfg.privacy.clip_norm)
        assert isinstance(event, DpSgdEvent) and event.sampling_rate == 1 / 40
        assert event.steps == 40
        model = build_task_model(cfg, load_task_data(cfg))
        before = [p.detach().clone() for p in model.parameters()]
        dp_sgd_train(model, data, cfg, event=event, device=torch.device("cpu"),
                     sampling=privacy_generator(cfg, "cpu"),
                     noise=privacy_generator(cfg, "cpu"))
        after = list(model.parameters())
        assert all(torch.isfinite(p).all() for p in after)
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_opacus_hooks_drop_an_example_whose_gradient_is_not_finite():
    # FedProx takes Opacus' per-example hooks. One example with an infinite feature must
    # add nothing, not turn the model into NaN (which would make the client withdraw the
    # round: a data-dependent release no clip bounds); every batch holds it (B = n).
    from client.privacy import dp_sgd_train, planned_event, privacy_generator
    from fedpriv.tasks import ArrayDataset

    cfg = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "dp-mode": "record",
                                  "batch-size": 64, "strategy": "fedprox",
                                  "proximal-mu": 0.01}).resolved()
    data = client_dataset(cfg, 0, 4).subset(np.arange(40))
    x = np.array(data.x, copy=True)
    x[7] = np.inf
    bad = ArrayDataset(x=x, y=np.asarray(data.y))
    event = planned_event(cfg, len(bad), cfg.privacy.clip_norm)
    model = build_task_model(cfg, load_task_data(cfg))
    dp_sgd_train(model, bad, cfg, event=event, device=torch.device("cpu"),
                 sampling=privacy_generator(cfg, "cpu"), noise=privacy_generator(cfg, "cpu"),
                 proximal_mu=0.01)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_what_leaves_the_device_under_each_dp_mode(tmp_path):
    # No unnoised training loss leaves under any DP mode; no example count under user
    # level (the update is unweighted); record level keeps FedAvg's example weight.
    from fedpriv.messages import UPDATE

    for mode in ("record", "user"):
        cfg = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "dp-mode": mode,
                                      "run-dir": str(tmp_path / mode)}).resolved()
        model = build_task_model(cfg, load_task_data(cfg))
        reply = client_app(train_message(cfg, model), context(SIM_NODE))
        metrics = reply.content[METRICS]
        assert TRAIN_LOSS not in metrics
        assert (NUM_EXAMPLES in metrics) is (mode == "record")
        assert (UPDATE in reply.content.array_records) is (mode == "user")


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
    assert own.privacy.client_max_epsilon == 3.0 and own.deployment.device is Device.CPU
    # The server cannot raise a device's own limit.
    assert node_overrides(cfg, {"client-max-epsilon": 50.0}).privacy.client_max_epsilon == 10.0


@pytest.mark.parametrize("dp_mode", ["record", "user"])
def test_a_round_asked_again_replays_the_released_update_uncharged(tmp_path, dp_mode):
    # A resumed run asks again for a round the client already charged: it must get the
    # update already released (no second release, no second charge); asked with another
    # global model it must refuse rather than train and charge twice.
    from fedpriv.messages import PRIVACY, REFUSED, UPDATE
    from fedpriv.privacy import PrivacyLedger

    cfg = RunConfig.from_mapping({
        "clients": 4, "local-epochs": 1, "partition": "iid", "dp-mode": dp_mode,
        "noise-multiplier": 1.0, "lr": 0.1, "run-dir": str(tmp_path), "run-id": "r1",
    }).resolved()
    model = build_task_model(cfg, load_task_data(cfg))
    first = client_app(train_message(cfg, model, server_round=2), context(SIM_NODE))
    again = client_app(train_message(cfg, model, server_round=2), context(SIM_NODE))
    key = ARRAYS if dp_mode == "record" else UPDATE
    for x, y in zip(first.content[key].to_numpy_ndarrays(),
                    again.content[key].to_numpy_ndarrays(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert list(first.content[key].keys()) == list(again.content[key].keys())
    [ledger_path] = tmp_path.glob("clients/*/ledger.sqlite")
    with PrivacyLedger.open(ledger_path) as ledger:
        assert [r for r, _ in ledger.events()] == [2]
    other = build_task_model(cfg.with_values(seed=cfg.training.seed + 1),
                             load_task_data(cfg))
    refused = client_app(train_message(cfg, other, server_round=2), context(SIM_NODE))
    assert refused.content[PRIVACY][REFUSED]
    with PrivacyLedger.open(ledger_path) as ledger:
        assert [r for r, _ in ledger.events()] == [2]


def test_distributed_dp_replays_the_identical_noised_vector(tmp_path, monkeypatch):
    # Under distributed DP the release includes the client's noise share: asked again
    # for a round it charged (a resumed run), the client must resend the very vector it
    # released (noise included), never re-noise the update, and not charge again.
    import client.train as client_module
    from client.replay import ReplayCache
    from fedpriv.messages import MASKED, SECAGG
    from fedpriv.privacy import PrivacyLedger

    monkeypatch.setattr(client_module, "mask", lambda msg, ctx, x: x)  # see what is masked
    from fedpriv.ddp_plan import min_survivors

    # the floor the (skipped) secure-aggregation stages would have been set up with
    monkeypatch.setattr(client_module, "round_floor", lambda ctx, r: min_survivors(cfg))

    def ask(cfg, model):
        msg = train_message(cfg, model, server_round=2)
        msg.content = RecordDict({**dict(msg.content),
                                  SECAGG: ConfigRecord({"round_id": 2})})
        reply = client_app(msg, context(SIM_NODE))
        assert not reply.has_error(), reply.error
        return reply.content[MASKED]["y"].numpy()

    cfg = RunConfig.from_mapping({
        "clients": 4, "local-epochs": 1, "partition": "iid", "model": "logreg",
        "dp-mode": "distributed", "secagg": "true", "run-dir": str(tmp_path / "a"),
        "run-id": "r1"}).resolved()
    model = build_task_model(cfg, load_task_data(cfg))
    first, again = ask(cfg, model), ask(cfg, model)
    np.testing.assert_array_equal(first, again)
    [ledger_path] = (tmp_path / "a").glob("clients/*/ledger.sqlite")
    with PrivacyLedger.open(ledger_path) as ledger:
        assert [r for r, _ in ledger.events()] == [2]
    from client.privacy import replay_dir

    assert not list((tmp_path / "a").rglob("*.safetensors"))  # nothing in the run directory
    kept = ReplayCache(ledger_path, ledger_path.parent.name,
                       directory=replay_dir(cfg, {})).load(
        run_id="r1", server_round=2, model=client_module.model_digest(
            {k: v.numpy() for k, v in model.state_dict().items()}))
    assert kept.kind == "encoded" and kept.arrays["x"].dtype == np.uint64
    np.testing.assert_array_equal(kept.arrays["x"], first)
    # a new run of the same round: fresh noise, a different vector
    other = cfg.with_values(run_dir=str(tmp_path / "b"))
    assert not np.array_equal(ask(other, model), first)


def test_distributed_dp_charges_only_the_sum_its_secure_aggregation_enforces(tmp_path):
    # The ledger charges a sum of n_min noise shares; the round's secure aggregation, set
    # up at stage 1, is what refuses smaller sums. A train message whose plan differs
    # from that floor (or a round whose keys were never advertised) is refused before
    # any data is used, and nothing is charged.
    from client.train import _floor_refusal
    from fedpriv.ddp_plan import distributed_plan, model_dimension
    from fedpriv.messages import PRIVACY, REFUSED, REFUSED_REASON, SECAGG
    from fedpriv.privacy import PrivacyLedger

    cfg = RunConfig.from_mapping({
        "clients": 4, "local-epochs": 1, "partition": "iid", "model": "logreg",
        "dp-mode": "distributed", "secagg": "true", "run-dir": str(tmp_path),
        "run-id": "r1"}).resolved()
    event = distributed_plan(cfg, model_dimension(cfg)).event(4)
    assert _floor_refusal(event, 4) == ""
    assert "set up for 3" in _floor_refusal(event, 3)
    assert "never advertised" in _floor_refusal(event, None)
    model = build_task_model(cfg, load_task_data(cfg))
    msg = train_message(cfg, model)
    msg.content = RecordDict({**dict(msg.content), SECAGG: ConfigRecord({"round_id": 1})})
    reply = client_app(msg, context(SIM_NODE))
    privacy = reply.content[PRIVACY]
    assert privacy[REFUSED] is True and "never advertised" in str(privacy[REFUSED_REASON])
    [ledger_path] = tmp_path.glob("clients/*/ledger.sqlite")
    with PrivacyLedger.open(ledger_path) as ledger:
        assert ledger.events() == []


def test_a_server_cannot_switch_a_budgeted_or_pinned_device_off_dp(tmp_path):
    # Red-team F-A: the server chooses dp-mode. Sent dp-mode=none, a device with its own
    # budget trained and returned its model unnoised, with no ledger and no budget check.
    data = device_data(tmp_path)
    device = {"data-dir": str(data), "ledger-path": str(tmp_path / "ledger.sqlite")}
    plain = RunConfig.from_mapping({"clients": 4, "local-epochs": 1}).resolved()
    model = build_task_model(plain, load_task_data(plain))

    def train(cfg, node):
        return client_app(train_message(cfg, model), context(node))

    # the ClientApp raises before touching data; a SuperNode sends the server the error
    with pytest.raises(PermissionError, match="client-max-epsilon=1"):
        train(plain, {**device, "client-max-epsilon": 1.0})
    assert not (tmp_path / "ledger.sqlite").exists()
    assert not train(plain, {**device, "client-max-epsilon": float("inf")}).has_error()
    user = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "dp-mode": "user"}
                                  ).resolved()
    pinned = {**device, "dp-mode": "record"}
    with pytest.raises(PermissionError, match="pins dp-mode=record"):
        train(user, pinned)
    with pytest.raises(PermissionError, match="refuses to evaluate"):
        client_app(train_message(plain, model, message_type="evaluate"),
                   context({**device, "client-max-epsilon": 1.0}))
    with pytest.raises(ValueError, match="dp-mode must be one of"):
        train(plain, {**device, "dp-mode": "strong"})
    record = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "dp-mode": "record",
                                     "noise-multiplier": 1.0}).resolved()
    assert not train(record, pinned).has_error()  # the mode it pins: trains


def test_a_deployed_node_under_dp_evaluates_only_with_its_consent(tmp_path):
    # Federated evaluation sends the loss and accuracy on the node's own data unnoised;
    # under DP a device answers a server's evaluate only if its node config allows it.
    data = device_data(tmp_path)
    device = {"data-dir": str(data), "ledger-path": str(tmp_path / "ledger.sqlite")}
    user = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "dp-mode": "user"}
                                  ).resolved()
    model = build_task_model(user, load_task_data(user))

    def evaluate(cfg, node):
        return client_app(train_message(cfg, model, message_type="evaluate"), context(node))

    with pytest.raises(PermissionError, match="no epsilon covers"):
        evaluate(user, device)
    assert not evaluate(user, {**device, "evaluate": True}).has_error()
    assert not evaluate(user, SIM_NODE).has_error()  # simulation: the run's plan says so
    plain = RunConfig.from_mapping({"clients": 4, "local-epochs": 1}).resolved()
    assert not evaluate(plain, device).has_error()  # no DP, no claim, no budget
