"""Secure aggregation through the real ServerApp logic and ClientApp, in-process."""

import json

import numpy as np
import pytest

from fedpriv.config import ConfigError, RunConfig
from server.rundir import RunDirectory
from tests.server.test_dp_federation import run


def final_model(tmp_path, name, **overrides):
    path, summary = run(tmp_path / name, **overrides)
    return RunDirectory(path).load_model(), summary


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_secure_sum_gives_the_plaintext_model_within_quantisation(tmp_path, strategy):
    base = {"rounds": 2, "clients": 5, "strategy": strategy, "reproducible": "true"}
    plain, _ = final_model(tmp_path, "plain", **base)
    secure, summary = final_model(tmp_path, "secure", secagg="true", **base)
    assert summary["secagg"]["enabled"] and summary["secagg"]["rounds_abandoned"] == 0
    worst = max(float(np.abs(plain[k] - secure[k]).max()) for k in plain)
    # Stochastic rounding: per coordinate at most one step (16 / 2^20) of the weighted
    # mean per round, amplified a little by the second round's training.
    assert worst < 1e-3
    assert any(float(np.abs(plain[k]).max()) > 1e-2 for k in plain)  # not a trivial model


def test_dropouts_are_recovered(tmp_path):
    _, summary = run(tmp_path / "r", secagg="true", rounds=3, clients=10,
                     **{"dropout-rate": 0.3})
    assert summary["status"] == "completed"
    assert summary["secagg"]["rounds_abandoned"] == 0
    assert summary["rounds_aggregated"] == 3
    assert sum(summary["secagg"]["dropouts_recovered"]) >= 1


def test_below_threshold_the_round_is_abandoned_and_the_model_kept(tmp_path):
    path, summary = run(tmp_path / "r", secagg="true", rounds=1, clients=6,
                        **{"dropout-rate": 0.95})
    assert summary["status"] == "completed"
    assert summary["secagg"]["rounds_abandoned"] == 1
    assert summary["final_accuracy"] == summary["initial_accuracy"]
    # "completed" is not read as "learned": the summary and the operator are told
    from server.reporting import idle_rounds

    assert summary["rounds_aggregated"] == 0
    assert "only 0 of 1 rounds aggregated an update" in idle_rounds(summary)


def test_composes_with_user_level_dp(tmp_path):
    path, summary = run(tmp_path / "r", secagg="true", rounds=2, clients=5,
                        **{"dp-mode": "user", "clip": "adaptive"})
    assert summary["status"] == "completed" and summary["epsilon"]["federation"] > 0
    from fedpriv.audit import audit_run

    assert audit_run(path).ok
    # what each client's masked vector costs: the model's d values and three meta slots,
    # with the modulus the round used
    line = json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["secagg"]["modulus_bits"] == line["secagg"]["modulus_bits"] > 0
    assert summary["secagg"]["coordinates"] == summary["secagg"]["model_parameters"] + 3


def test_dropout_rate_needs_secagg():
    with pytest.raises(ConfigError, match="dropout-rate: simulated dropouts need secagg"):
        RunConfig.from_mapping({"dropout-rate": "0.2"})


class RecordingGrid:
    """A LoopbackGrid that keeps every (request, reply) pair."""

    def __new__(cls, app, nodes):
        from bench.loopback import LoopbackGrid

        class _Grid(LoopbackGrid):
            def pull_messages(self, message_ids):
                replies = super().pull_messages(message_ids)
                asked = {q.metadata.message_id: q for q in self.sent}
                self.pairs.extend((asked[r.metadata.reply_to_message_id], r) for r in replies)
                return replies

        grid = _Grid(app, nodes)
        grid.pairs = []
        return grid


def _secagg_run(tmp_path, **overrides):
    from bench.loopback import task_identity
    from client.app import app as client_app
    from server.federation import run_federation
    from server.reporting import LogReporter

    values = {"rounds": 1, "clients": 4, "local-epochs": 1, "partition": "iid",
              "secagg": "true", **overrides}
    run_dir = RunDirectory(tmp_path / "run").create()
    cfg = RunConfig.from_mapping({**values, "run-dir": str(run_dir.path)}).resolved()
    nodes = {i + 1: {"partition-id": i, "num-partitions": cfg.training.clients}
             for i in range(cfg.training.clients)}
    grid = RecordingGrid(client_app, nodes)
    with task_identity():
        summary = run_federation(grid, cfg, run_dir, scenario="t", reporter=LogReporter())
    return grid, summary, run_dir.path


def test_secagg_train_replies_carry_no_count_or_loss_and_the_server_gets_totals(tmp_path):
    from fedpriv.messages import MASKED, NUM_EXAMPLES, TRAIN_LOSS

    grid, summary, path = _secagg_run(tmp_path)
    train = [(q, r) for q, r in grid.pairs if q.metadata.message_type == "train"]
    assert len(train) == 4 and all(not r.has_error() for _, r in train)
    for _, reply in train:
        assert MASKED in reply.content.array_records
        for rec in (*reply.content.metric_records.values(),
                    *reply.content.config_records.values()):
            assert NUM_EXAMPLES not in rec and TRAIN_LOSS not in rec
    assert summary["status"] == "completed" and summary["secagg"]["rounds_abandoned"] == 0
    metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    loss = metrics[-1]["train_loss"]
    assert loss is not None and 0 < loss < 10  # the example-weighted mean, from the sum
    assert (path / "identities" / "roster.json").exists()


def test_an_advertise_replayed_for_a_finished_round_gets_an_error_reply(tmp_path):
    from bench.loopback import instruction
    from fedpriv.messages import SECAGG_ADVERTISE

    grid, summary, _ = _secagg_run(tmp_path)
    old_adv = next(q for q, _ in grid.pairs if q.metadata.message_type == SECAGG_ADVERTISE)
    node = old_adv.metadata.dst_node_id
    replay = instruction(old_adv.content, dst_node_id=node, message_type=SECAGG_ADVERTISE)
    [reply] = grid.send_and_receive([replay])
    assert reply.has_error() and "replayed round" in reply.error.reason


def test_a_key_substituted_in_transit_makes_that_client_abort_and_the_round_goes_on(
        tmp_path, monkeypatch):
    # Prepare: a server (here: its transport) that swaps one neighbour key in the
    # share-stage message to node 1.
    from flwr.app import ConfigRecord, RecordDict

    from bench import loopback as grid_mod
    from fedpriv.messages import SECAGG, SECAGG_SHARE

    original = grid_mod.delivered

    def tamper(msg, **kw):
        out = original(msg, **kw)
        if out.metadata.message_type == SECAGG_SHARE and out.metadata.dst_node_id == 1:
            rec = dict(out.content[SECAGG])
            rec["c_pks"] = [bytes(32 * [7])] + list(rec["c_pks"])[1:]
            out.content = RecordDict({**dict(out.content), SECAGG: ConfigRecord(rec)})
        return out

    monkeypatch.setattr(grid_mod, "delivered", tamper)
    # Execute
    grid, summary, _ = _secagg_run(tmp_path)
    # Assert: node 1 refused (its reply is an error naming the signature), the other
    # three completed the round without it.
    share = [(q, r) for q, r in grid.pairs if q.metadata.message_type == SECAGG_SHARE]
    bad = [r for q, r in share if q.metadata.dst_node_id == 1]
    assert bad and bad[0].has_error() and "do not carry its signature" in bad[0].error.reason
    assert all(not r.has_error() for q, r in share if q.metadata.dst_node_id != 1)
    assert summary["status"] == "completed" and summary["secagg"]["rounds_abandoned"] == 0
    train = [q for q, _ in grid.pairs if q.metadata.message_type == "train"]
    assert sorted(q.metadata.dst_node_id for q in train) == [2, 3, 4]


def test_a_client_pinning_a_stricter_minimum_refuses_a_cohort_too_small_for_it(
        tmp_path, monkeypatch):
    # Prepare: node 1's operator insists the server learn only sums of >= 8 honest
    # clients; the run has 6.
    from bench import loopback as grid_mod
    from fedpriv.messages import SECAGG_SHARE

    original = grid_mod.LoopbackGrid.__init__

    def init(self, app, nodes, **kw):
        nodes = {n: ({**c, "secagg-min-honest": 8} if n == 1 else c)
                 for n, c in nodes.items()}
        original(self, app, nodes, **kw)

    monkeypatch.setattr(grid_mod.LoopbackGrid, "__init__", init)
    grid, summary, _ = _secagg_run(tmp_path, clients="6")
    # Assert: node 1 refuses at the share stage; the other five go on without it.
    bad = [r for q, r in grid.pairs
           if q.metadata.message_type == SECAGG_SHARE and q.metadata.dst_node_id == 1]
    assert bad and bad[0].has_error()
    assert "cannot have the 8 survivors" in bad[0].error.reason
    assert summary["status"] == "completed" and summary["secagg"]["rounds_abandoned"] == 0
    train = [q for q, _ in grid.pairs if q.metadata.message_type == "train"]
    assert sorted(q.metadata.dst_node_id for q in train) == [2, 3, 4, 5, 6]


def test_deployed_nodes_use_their_own_identity_and_roster_from_the_certs_dir(
        tmp_path, monkeypatch):
    # Prepare: `fedpriv certs node` keys for four nodes; each node's config names its
    # own identity and the roster (what `fedpriv deploy supernode` is to pass).
    from bench import loopback as grid_mod
    from fedpriv.certs import node_key, node_secagg_config

    certs = tmp_path / "certs"
    for i in range(4):
        node_key(certs, f"edge-{i}")
    original = grid_mod.LoopbackGrid.__init__

    def init(self, app, nodes, **kw):
        nodes = {n: {**c, **node_secagg_config(certs, f"edge-{n - 1}")}
                 for n, c in nodes.items()}
        original(self, app, nodes, **kw)

    monkeypatch.setattr(grid_mod.LoopbackGrid, "__init__", init)
    # Execute
    grid, summary, path = _secagg_run(tmp_path)
    # Assert: the round completed with the certs identities (the run directory's
    # simulation identities would not verify against the certs roster, and vice versa).
    assert summary["status"] == "completed" and summary["secagg"]["rounds_abandoned"] == 0
    from fedpriv.certs import load_roster
    from fedpriv.messages import SECAGG, SECAGG_ADVERTISE

    certs_roster = load_roster(certs / "roster.json")
    sim_roster = load_roster(path / "identities" / "roster.json")
    adverts = [r for q, r in grid.pairs if q.metadata.message_type == SECAGG_ADVERTISE]
    assert len(adverts) == 4
    from fedpriv.secagg import AdvertiseKeys, advert_payload

    for r in adverts:
        adv = AdvertiseKeys.from_dict(dict(r.content[SECAGG]))
        payload = advert_payload(run_id=7, round_id=1, sender=adv.sender, c_pk=adv.c_pk,
                                 s_pk=adv.s_pk)
        assert certs_roster.verify(adv.sender, payload, adv.signature)
        assert not sim_roster.verify(adv.sender, payload, adv.signature)


def test_masked_vectors_travel_in_the_modulus_bytes(tmp_path):
    # 46-bit coordinates (the default modulus for 4 clients) go as 6 bytes, not 8.
    from fedpriv.messages import MASKED
    from fedpriv.secagg import unpack, word_bytes

    grid, summary, path = _secagg_run(tmp_path)
    line = json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])
    bits, length = line["secagg"]["modulus_bits"], summary["secagg"]["coordinates"]
    assert word_bytes(bits) < 8
    for q, r in grid.pairs:
        if q.metadata.message_type == "train":
            y = r.content[MASKED]["y"].numpy()
            assert y.dtype == np.uint8 and y.size == length * word_bytes(bits)
            assert y.size == summary["secagg"]["masked_vector_bytes"]
            assert unpack(y, bits, length).max() < 2 ** bits


@pytest.mark.parametrize("tamper", ["one byte more", "uint64 words", "over the modulus",
                                    "two arrays"])
def test_a_malformed_masked_vector_counts_as_a_dropout_and_the_round_goes_on(
        tmp_path, monkeypatch, tamper):
    # Prepare: node 2 sends a masked vector that is not one of this round's: a byte too
    # many, the unpacked uint64 words, a coordinate of 2^b or more, or an extra array.
    from flwr.app import ArrayRecord

    import client.train as train_module
    from fedpriv.secagg import unpack

    real_mask = train_module.mask

    def lying(msg, context, x):
        y = real_mask(msg, context, x)
        if msg.metadata.dst_node_id != 2:
            return y
        k = y.size // x.size  # bytes per coordinate
        if tamper == "one byte more":
            return np.concatenate([y, np.zeros(1, np.uint8)])
        if tamper == "uint64 words":
            return unpack(y, 8 * k, x.size)
        if tamper == "over the modulus":  # the top byte of coordinate 0, all ones
            return np.concatenate([y[:k - 1], [0xFF], y[k:]]).astype(np.uint8)
        return y

    monkeypatch.setattr(train_module, "mask", lying)
    if tamper == "two arrays":
        from strategies import updates

        real_record = updates.numpy_record

        def two(arrays):
            rec = real_record(arrays)
            if list(arrays) == ["y"] and two.calls == 1:
                rec = ArrayRecord({**dict(rec), "z": rec["y"]})
            two.calls += 1
            return rec
        two.calls = 0
        monkeypatch.setattr(train_module, "numpy_record", two)
    # Execute
    grid, summary, path = _secagg_run(tmp_path)
    # Assert: node 2's vector was refused, its masks removed from shares, the round done
    line = json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["secagg"]["modulus_bits"] % 8  # so a coordinate can exceed the modulus
    assert summary["status"] == "completed" and summary["secagg"]["rounds_abandoned"] == 0
    assert line["secagg"]["survivors"] == 3 and line["secagg"]["dropped"] == 1
    assert np.isfinite(line["test_loss"])
