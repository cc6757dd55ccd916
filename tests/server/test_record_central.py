"""dp-mode = record-central: one step of centralised DP-SGD a round, noised by the server.

Each round must be exactly Abadi et al.'s step over the federation's examples: each
example's gradient clipped to C, summed over a Poisson sample, N(0, sigma^2 C^2) added
once (not once per client), divided by the expected batch q N. Checked against a naive
per-example loop, statistically for the noise, and in the ledgers and the audit.
"""

import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from safetensors.numpy import load_file

from bench.loopback import LoopbackGrid, task_identity
from client.app import app as client_app
from fedpriv.audit import audit_run
from fedpriv.config import ConfigError, RunConfig
from fedpriv.dp_plan import with_user_noise
from fedpriv.messages import METRICS, UPDATE, UPDATE_WEIGHT
from fedpriv.privacy import DpSgdEvent, PrivacyLedger, SeededGaussian, epsilon
from fedpriv.tasks import build_task_model, client_dataset
from server.federation import run_federation
from server.reporting import LogReporter
from server.rundir import RunDirectory
from strategies.central_dp import CentralDpSgd
from strategies.dp_fedavg import TEST_ONLY_NOISE_SCALE

BASE = {"rounds": 2, "clients": 3, "partition": "iid", "dp-mode": "record-central",
        "record-sampling-rate": 0.25, "lr": 0.5, "clip-norm": 0.5}


def run(tmp_path, *, resume=False, **overrides):
    """A run in ``tmp_path / "run"`` (``resume``: continue the one there)."""
    run_dir = RunDirectory(tmp_path / "run")
    if not resume:
        run_dir.create()
    cfg = RunConfig.from_mapping({**BASE, **overrides, "run-dir": str(run_dir.path)}).resolved()
    cfg = with_user_noise(cfg)
    nodes = {i + 1: {"partition-id": i, "num-partitions": cfg.training.clients}
             for i in range(cfg.training.clients)}
    with task_identity():
        summary = run_federation(LoopbackGrid(client_app, nodes), cfg, run_dir,
                                 scenario="t", reporter=LogReporter(), resume=resume)
    return cfg, run_dir.path, summary


def _naive_step(cfg: RunConfig) -> dict[str, np.ndarray]:
    """w - lr sum_i clip_C(g_i) / N over every example of every client, one at a time."""
    model = build_task_model(cfg)
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    n = 0
    for part in range(cfg.training.clients):
        data = client_dataset(cfg, part, cfg.training.clients)
        for x, y in zip(data.x, data.y, strict=True):
            model.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(x[None])),
                                                     torch.as_tensor(y[None]))
            loss.backward()
            grads = {k: p.grad.detach().double() for k, p in params.items()}
            norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
            scale = min(1.0, cfg.privacy.clip_norm / (norm + 1e-6))
            for k, g in grads.items():
                total[k] += scale * g
            n += 1
    return {k: (p.detach().double() - cfg.training.lr * total[k] / n).numpy()
            for k, p in params.items()}


def test_a_round_is_one_clipped_gradient_step_over_every_clients_examples(tmp_path,
                                                                        monkeypatch):
    # q = 1 takes every example; the noise is switched off (never in a real run) so the
    # step itself can be compared with a naive per-example loop.
    monkeypatch.setenv(TEST_ONLY_NOISE_SCALE, "0")
    cfg, path, summary = run(tmp_path, rounds=1, **{"record-sampling-rate": 1.0})
    assert summary["status"] == "completed"
    got = load_file(str(path / "model.safetensors"))
    want = _naive_step(cfg)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=2e-6, rtol=0)
    initial = load_file(str(path / "model-initial.safetensors"))
    assert any(not np.allclose(initial[k], got[k]) for k in got)  # it did step


def test_ledgers_record_one_sampled_gaussian_step_a_round_and_the_audit_agrees(tmp_path):
    cfg, path, summary = run(tmp_path, rounds=3, **{"target-epsilon": 2.0})
    assert summary["status"] == "completed"
    sigma = cfg.privacy.noise_multiplier
    with PrivacyLedger.open(path / "ledger.sqlite") as fed:
        events = fed.events()
    assert [r for r, _ in events] == [1, 2, 3]
    want = DpSgdEvent(noise_multiplier=sigma, sampling_rate=0.25, steps=1, clip=0.5)
    assert all(e == want for _, e in events)
    # the target is met with the calibrated sigma, and is what three such steps spend
    assert summary["epsilon"]["federation"] == pytest.approx(
        epsilon([DpSgdEvent(noise_multiplier=sigma, sampling_rate=0.25, steps=3, clip=0.5)],
                1e-5))
    assert 1.98 < summary["epsilon"]["federation"] <= 2.0 + 1e-9
    report = audit_run(path)
    assert report.ok, report.problems
    clients = [s for s in report.scopes if s.scope.startswith("client-")]
    assert len(clients) == 3  # each client charged the same steps in its own ledger
    assert all(s.epsilon_pld == pytest.approx(summary["epsilon"]["federation"])
               for s in clients)


def _reply(arrays: dict[str, np.ndarray], weight: float) -> Message:
    content = RecordDict({UPDATE: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          METRICS: MetricRecord({UPDATE_WEIGHT: weight})})
    return Message(content, dst_node_id=0, message_type="train")


class _Inner:
    def aggregate_train(self, server_round, replies):
        (reply,) = replies
        return reply.content["arrays"], None

    def configure_train(self, server_round, arrays, config, grid):
        return []


def test_the_server_adds_the_noise_once_to_the_sum_and_only_to_trained_parameters():
    sigma, q, clip, lr = 1.5, 0.2, 0.3, 2.0
    event = DpSgdEvent(noise_multiplier=sigma, sampling_rate=q, steps=1, clip=clip)
    wrapper = CentralDpSgd(_Inner(), event=event, learning_rate=lr, trained=["w"],
                           noise=SeededGaussian(np.random.default_rng(7)))
    shape = (100, 100)
    base = {"w": np.zeros(shape, np.float32), "frozen": np.full(3, 5.0, np.float32)}
    wrapper.configure_train(1, ArrayRecord({k: Array(v) for k, v in base.items()}),
                            ConfigRecord({}), grid=None)
    weights = (40.0, 60.0, 100.0)  # three clients' example counts: N = 200, L = q N = 40
    with task_identity():
        replies = [_reply({"w": np.zeros(shape, np.float32),
                           "frozen": np.zeros(3, np.float32)}, w) for w in weights]
        arrays, _ = wrapper.aggregate_train(1, replies)
    step = arrays["w"].numpy()
    # one draw of N(0, sigma^2 C^2) for the sum, scaled by lr / (q N): noise added per
    # client would be sqrt(3) times larger, noise divided by the clients sqrt(3) smaller
    want = lr * sigma * clip / (q * sum(weights))
    assert step.std() == pytest.approx(want, rel=0.03)
    assert abs(step.mean()) < 4 * want / 100
    np.testing.assert_array_equal(arrays["frozen"].numpy(), base["frozen"])
    assert wrapper.last_round is not None and wrapper.last_round.event == event
    assert wrapper.last_round.expected_batch == pytest.approx(q * sum(weights))


def test_a_round_nobody_answered_releases_nothing():
    event = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.5, steps=1, clip=1.0)
    wrapper = CentralDpSgd(_Inner(), event=event, learning_rate=1.0, trained=["w"],
                           noise=SeededGaussian(np.random.default_rng(0)))
    wrapper.configure_train(1, ArrayRecord({"w": Array(np.zeros(2, np.float32))}),
                            ConfigRecord({}), grid=None)
    assert wrapper.aggregate_train(1, []) == (None, None)
    assert wrapper.last_round is None  # nothing to charge


@pytest.mark.parametrize(("values", "key"), [
    ({"dp-mode": "record-central"}, "record-sampling-rate"),
    ({"dp-mode": "record-central", "record-sampling-rate": 1.5}, "record-sampling-rate"),
    ({"dp-mode": "record-central", "record-sampling-rate": 0.1, "secagg": True}, "secagg"),
    ({"dp-mode": "record-central", "record-sampling-rate": 0.1, "strategy": "krum"},
     "strategy"),
    ({"dp-mode": "record-central", "record-sampling-rate": 0.1, "clip": "adaptive"}, "clip"),
    ({"dp-mode": "record-central", "record-sampling-rate": 0.1, "dataset": "movielens"},
     "dp-mode"),
])
def test_bad_record_central_configs_name_the_key(values, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping({"clients": 10, **values})
    assert err.value.key == key


def test_the_federation_budget_stops_the_run_before_it_is_exceeded(tmp_path):
    # sigma 1.2 at q 0.25, delta 1e-5: epsilon 1.99, 2.44, 2.79, 3.09 after 1..4 steps,
    # so a budget of 3 holds three of the ten planned, never a step past it
    cfg, path, summary = run(tmp_path, rounds=10, **{"noise-multiplier": 1.2,
                                                     "max-epsilon": 3.0})
    assert summary["status"] == "stopped" and "max-epsilon 3" in summary["reason"]
    assert 1 <= summary["rounds"] < 10
    assert summary["epsilon"]["federation"] <= 3.0
    assert summary["rounds"] == 3
    one_more = epsilon([DpSgdEvent(noise_multiplier=1.2, sampling_rate=0.25,
                                   steps=summary["rounds"] + 1, clip=0.5)], 1e-5)
    assert one_more > 3.0  # it stopped because the next step would not fit
    assert audit_run(path).ok
    from fedpriv.durable import private_dir

    assert not private_dir(path, "replay").exists()  # a stopped run is never resumed


@pytest.mark.parametrize("mode", ["record-central", "user"])
def test_no_copy_of_what_a_client_released_is_left_in_or_beside_the_run(tmp_path, mode):
    # A client's replay copy is its clipped sum (update) before the server's noise: in
    # the run directory anyone who reads it could subtract it from the released model
    # and recover the noise. It lives in a private state directory, and a completed run
    # removes it.
    from fedpriv.durable import private_dir

    extra = {"dp-mode": mode, **({"noise-multiplier": 1.0} if mode == "user" else {})}
    cfg, path, summary = run(tmp_path, **extra)
    assert summary["status"] == "completed"
    kept = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.safetensors"))
    assert kept and all("/" not in p for p in kept), kept  # only the server's own files
    assert not any(p.name == "replay" for p in path.rglob("*"))
    assert not private_dir(path, "replay").exists()


class _PowerCut(BaseException):
    pass


@pytest.mark.parametrize("where", ["charge", "checkpoint"])
def test_a_crash_around_the_charge_never_leaves_two_releases_of_one_sum(tmp_path,
                                                                        monkeypatch, where):
    # Found by a red-team review: the noised model used to reach the disk (the pending
    # checkpoint) before its round was charged; a crash in between discarded it on resume
    # and ran the round again, the clients replaying the same clipped sum for fresh noise:
    # two releases of one sum, one charge. Now the charge comes first.
    from server.checkpoint import Checkpointer
    from server.privacy import FederationPrivacy

    target = ((FederationPrivacy, "record_user_round") if where == "charge"
              else (Checkpointer, "before_commit"))
    original = getattr(*target)

    def cut(self, server_round, *args):
        if server_round == 2:
            raise _PowerCut(f"power cut in {where}, round 2")
        return original(self, server_round, *args)

    monkeypatch.setattr(*target, cut)
    with pytest.raises(_PowerCut):
        run(tmp_path, rounds=3)
    path = tmp_path / "run"
    assert not (path / "checkpoint-next.safetensors").exists()  # nothing noised, uncharged
    with PrivacyLedger.open(path / "ledger.sqlite") as fed:
        charged = [r for r, _ in fed.events()]
    assert charged == ([1] if where == "charge" else [1, 2])
    monkeypatch.setattr(*target, original)
    _, _, summary = run(tmp_path, resume=True, rounds=3)
    assert summary["status"] == "completed"
    with PrivacyLedger.open(path / "ledger.sqlite") as fed:
        assert [r for r, _ in fed.events()] == [1, 2, 3]  # round 2 charged once
    for ledger in sorted(path.glob("clients/*/ledger.sqlite")):
        with PrivacyLedger.open(ledger) as own:
            assert [r for r, _ in own.events()] == [1, 2, 3]
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3]
    # charged before the cut, its result lost: not run again (a second release of one
    # charge), the model kept from round 1
    assert bool(lines[1].get("result_lost")) == (where == "checkpoint")
    if where == "checkpoint":
        assert lines[1]["test_accuracy"] == lines[0]["test_accuracy"]
    assert audit_run(path).ok


def test_a_run_with_the_tests_under_noising_switch_says_so_and_fails_its_audit(
        tmp_path, monkeypatch):
    # The switch is recorded in the federation ledger's genesis, under the hash chain and
    # the signed head: deleting it from the (unsigned) summary does not hide it.
    import json

    from fedpriv.privacy import PrivacyLedger

    monkeypatch.setenv(TEST_ONLY_NOISE_SCALE, "0.5")
    _, path, summary = run(tmp_path, rounds=1)
    assert summary["test_only_noise_scale"] == 0.5
    with PrivacyLedger.open(path / "ledger.sqlite") as ledger:
        assert ledger.flags() == {"test_only_noise_scale": 0.5}
    report = audit_run(path)
    assert not report.ok
    assert any("FEDPRIV_TEST_ONLY_NOISE_SCALE=0.5" in p for p in report.problems)
    del summary["test_only_noise_scale"]
    (path / "summary.json").write_text(json.dumps(summary))
    hidden = audit_run(path)
    assert not hidden.ok
    assert any("FEDPRIV_TEST_ONLY_NOISE_SCALE=0.5" in p for p in hidden.problems)


def test_heads_reported_in_a_round_lost_after_its_charge_stay_on_record(tmp_path,
                                                                        monkeypatch):
    # User level, Poisson cohorts of ~2 of 4: the clients that charged the last round
    # (lost in a cut after the charge) may never report again; the run must still hold
    # their heads, or the audit would take their ledgers for rewritten ones.
    from server.checkpoint import Checkpointer

    original = Checkpointer.before_commit

    def cut(self, server_round, *args):
        if server_round == 2:
            raise _PowerCut("power cut after the charge of round 2")
        return original(self, server_round, *args)

    values = {"dp-mode": "user", "clients": 4, "clients-per-round": 2, "model": "logreg",
              "noise-multiplier": 1.0, "clip-norm": 1.0}
    monkeypatch.setattr(Checkpointer, "before_commit", cut)
    with pytest.raises(_PowerCut):
        run(tmp_path, rounds=2, **values)
    monkeypatch.setattr(Checkpointer, "before_commit", original)
    _, path, summary = run(tmp_path, resume=True, rounds=2, **values)
    assert summary["status"] == "completed"
    with PrivacyLedger.open(path / "ledger.sqlite") as fed:
        assert [r for r, _ in fed.events()] == [1, 2]
    report = audit_run(path)
    assert report.ok, report.problems


def test_each_client_draws_its_sample_at_the_recorded_rate():
    # Poisson sampling at q: over many rounds the number drawn is Binomial(n, q), and the
    # clipped sum of a sample has norm at most C times its size.
    from client.privacy import central_gradient_sum

    cfg = RunConfig.from_mapping({**BASE, "record-sampling-rate": 0.25}).resolved()
    data = client_dataset(cfg, 0, 3)
    model = build_task_model(cfg)
    generator = torch.Generator().manual_seed(3)
    drawn = []
    for _ in range(40):
        update, _, k = central_gradient_sum(model, data, cfg, device=torch.device("cpu"),
                                            sampling=generator)
        norm = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum())
                             for v in update.values()))
        assert norm <= 0.5 * k * (1 + 1e-5)
        drawn.append(k)
    n, q = len(data), 0.25
    mean, sd = n * q, math.sqrt(n * q * (1 - q) / len(drawn))
    assert abs(np.mean(drawn) - mean) < 4 * sd  # a 4-sigma band on the mean of 40 draws


@pytest.mark.parametrize("mode", ["record", "record-central", "user"])
def test_the_plan_says_federated_evaluation_is_not_covered_by_epsilon(mode):
    from server.planning import privacy_plan

    base = {**BASE, "dp-mode": mode}
    plain = privacy_plan(with_user_noise(RunConfig.from_mapping(base).resolved()))
    assert "unprotected_evaluation" not in plain and "fraction-evaluate" not in plain["text"]
    cfg = with_user_noise(RunConfig.from_mapping({**base, "fraction-evaluate": 0.5}).resolved())
    plan = privacy_plan(cfg)
    assert plan["unprotected_evaluation"] and "no epsilon covers" in plan["text"]
