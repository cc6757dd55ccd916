"""The benchmark suites run and report; no timing is asserted (timings belong in bench/)."""

import math
import os
import time

import numpy as np
import pytest

from bench.suites import accounting, dpsgd, report
from bench.suites.common import per_round
from bench.suites.report import render


def test_dpsgd_suite_reports_positive_ratios_for_every_mode():
    result = dpsgd.run(quick=True)
    modes = {(r["model"], r["mode"]) for r in result["rows"]}
    kinds = ("non-private", "hooks", "ghost", "bookkeeping")
    assert modes == {(m, k) for m in ("mlp", "cnn") for k in kinds}
    assert all(r["examples_per_s"] > 0 and r["ratio_to_non_private"] > 0
               for r in result["rows"])
    assert all(r["ratio_to_non_private"] == 1.0 for r in result["rows"]
               if r["mode"] == "non-private")
    assert result["profile_cnn_hooks"]


def test_accounting_suite_orders_the_accountants():
    result = accounting.run(quick=True)
    for r in result["rows"]:
        assert 0 < r["pld"] <= r["rdp"]
        if r["prv"] is not None:
            assert r["prv_over_pld"] == pytest.approx(1.0, abs=0.05)
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    text = render({"accounting": {"meta": meta, **result}})
    assert "RDP/PLD" in text and "fedpriv bench accounting --quick" in text


def test_per_round_excludes_the_first_round():
    assert per_round([10.0, 12.0, 14.0]) == 2.0
    with pytest.raises(ValueError, match="two rounds"):
        per_round([3.0])


def test_distributed_client_encoding_is_timed_for_both_modes():
    from bench.suites.distributed import _encode_seconds

    sets = {"partition": "iid", "clients": "10", "model": "logreg", "secagg": "true",
            "target-epsilon": "8"}
    seconds = _encode_seconds(sets, repeats=2)
    assert set(seconds) == {"user", "distributed"} and all(t > 0 for t in seconds.values())


def test_the_utility_report_shows_the_distributed_gap():
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    row = {"epsilon": 8.0, "modulus_bits": 47, "coordinates": 653,
           "client_encode_seconds": 0.002}
    payload = {"meta": meta, "rounds": 5, "rows": [
        {"mode": "none", "target": None, "epsilon": None, "final_accuracy": 0.9}],
        "distributed": {"clients": 20, "rounds": 8, "target_epsilon": 8.0, "rows": [
            {**row, "mode": "central", "final_accuracy": 0.87, "gap_points": 0.0,
             "min_survivors": None},
            {**row, "mode": "distributed", "final_accuracy": 0.85, "gap_points": 2.0,
             "min_survivors": 12, "modulus_bits": 22, "coordinates": 1027}]}}
    text = render({"utility": payload})
    assert "points below central" in text
    assert ("| distributed | 12 | 8.00 | 0.850 (0.850-0.850, 1 seeds) | +2.0 | 22 | 1027 | "
            "2.0 ms |") in text
    payload["distributed"]["rows"][1].update(gap_ci95_points=[-1.25, 5.25], seeds=10)
    assert "0.850 (0.850-0.850, 10 seeds) | +2.0 (-1.2 to +5.2) | 22 |" in render(
        {"utility": payload})


def test_distributed_gaps_are_paired_by_seed(monkeypatch):
    # Two seeds whose central and distributed accuracies move together: the paired
    # differences are constant, so the interval is a point, whatever the spread.
    from bench.suites import distributed

    acc = {("user", 0): 0.9, ("user", 1): 0.5, ("distributed", 0): 0.8,
           ("distributed", 1): 0.4}

    def fake_run(sets, seed):
        mode = sets["dp-mode"]
        return {"final_accuracy": acc[(mode, seed)],
                "epsilon": {"federation": 6.0 if mode == "distributed" else 8.0},
                "secagg": {"modulus_bits": 13, "coordinates": 1027},
                "distributed_dp": {"min_survivors": 12} if mode == "distributed" else None}

    monkeypatch.setattr(distributed, "_run", fake_run)
    monkeypatch.setattr(distributed, "_encode_seconds",
                        lambda sets, repeats: {"user": 1e-4, "distributed": 1e-3})
    rows = {r["mode"]: r for r in distributed.run(quick=True, seeds=(0, 1))["rows"]}
    skellam = rows["distributed, Skellam shares (default)"]
    assert skellam["gap_points"] == pytest.approx(10.0)
    assert skellam["gap_ci95_points"] == pytest.approx([10.0, 10.0])
    assert skellam["accuracy_range"] == [0.4, 0.8] and skellam["seeds"] == 2


def test_lm_suite_reports_tokens_per_second_and_adapter_bytes():
    pytest.importorskip("peft", reason="the lm suite needs transformers and peft")
    from bench.suites import lm
    from fedpriv.config import LmBase

    result = lm.measure(LmBase.TINY_RANDOM, quick=True)
    assert [r["mode"] for r in result["rows"]] == ["non-private LoRA", "DP-LoRA (Opacus hooks)"]
    assert all(r["tokens_per_s"] > 0 for r in result["rows"])
    b = result["bytes"]
    assert b["adapter_bytes_fp32"] == 4 * b["adapter_values"] > 0
    assert b["full_model_values"] > b["adapter_values"]
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    text = render({"lm": {"meta": meta, **result}})
    assert "DP-LoRA" in text and "fedpriv bench lm --quick" in text


def test_edge_suite_compares_fresh_processes_with_the_minimal_client():
    # The suite's code on the fullest configuration only (the others differ by keys); the
    # full suite (`fedpriv bench edge`) runs all three.
    from bench.edge import measure

    result = measure(examples=100, repeats=1, configs=["record-DP + secagg"])
    rows = result["rows"]
    assert [(r["client"], r["config"]) for r in rows] == [
        ("minimal Flower + torch", "no privacy"), ("fedpriv", "record-DP + secagg")]
    minimal = rows[0]
    for r in rows:
        assert 0 < r["rss_at_start_mb"] < r["rss_after_imports_mb"] <= r["peak_rss_mb"]
        assert r["train_round_seconds"] > 0 and r["reply_bytes"] > 0
        assert r["peak_ratio"] == r["peak_rss_mb"] / minimal["peak_rss_mb"]
        assert r["imports_ratio"] == r["rss_after_imports_mb"] / minimal["rss_after_imports_mb"]
        # nothing on the device path that the minimal Flower client does not load too
        assert set(r["needless_imports"]) <= set(minimal["needless_imports"]), r
    # the masked vector travels in 6 bytes per coordinate (its 44-47 bit modulus), the
    # float32 model in 4: 1.5 times the bytes, plus the three slots and framing
    assert 1.45 < rows[-1]["reply_bytes"] / rows[0]["reply_bytes"] < 1.6
    steps = [s["step"] for s in result["import_breakdown"]]
    assert steps[0] == "interpreter" and "torch" in steps
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    text = render({"edge": {"meta": meta, **result}})
    assert "fedpriv bench edge --quick" in text and "peak ratio" in text


def test_profile_breakdown_attributes_samples_to_categories():
    from bench.suites.profiles import breakdown

    frames = [{"name": "_find_and_load", "file": "<frozen importlib._bootstrap>"},
              {"name": "append", "file": "/x/fedpriv/privacy/ledger.py"},
              {"name": "step", "file": "/x/client/bookkeeping.py"},
              {"name": "main", "file": "/x/run.py"}]
    speedscope = {"shared": {"frames": frames}, "profiles": [
        {"samples": [[3, 0], [3, 1], [3, 2], [3, 2], [3, 2]], "weights": [1, 1, 1, 1, 1]}]}
    b = breakdown(speedscope)
    assert b["imports_share_of_all"] == 0.2
    assert b["categories"]["ledger (SQLite, signatures, fsync)"] == 0.25
    assert b["fixed_share"] == 0.25 and b["per_example_share"] == 0.75
    assert b["samples"] == 5
    # py-spy writes weights in seconds: the amount is then time sampled, not a count
    timed = {**speedscope, "profiles": [{**speedscope["profiles"][0], "unit": "seconds",
                                         "weights": [0.01] * 5}]}
    b = breakdown(timed)
    assert "samples" not in b and b["sampled_seconds"] == pytest.approx(0.05)
    assert b["categories"]["ledger (SQLite, signatures, fsync)"] == 0.25


def test_the_fashion_mnist_frontier_runs_the_scenario_federated_and_centralised(
        tmp_path, monkeypatch):
    # The plumbing, with the federation stubbed (the real runs are the benchmark itself):
    # the scenario's settings, each epsilon once federated, the centralised comparison,
    # the non-private ceilings, the recipes' ablation, the plot and the README table.
    from bench.suites import fashion_mnist

    calls = []

    def fake_federate(values):
        calls.append(dict(values))
        eps = values["target-epsilon"] if values["dp-mode"] != "none" else None
        acc = 0.9 if eps is None else 0.8 + eps / 100 + values["rounds"] / 10_000
        return {"status": "completed", "epsilon": {"federation": eps}, "final_accuracy": acc}

    monkeypatch.setattr(fashion_mnist, "federate", fake_federate)
    monkeypatch.setattr(fashion_mnist, "_prime_centralised", lambda *a: None)
    monkeypatch.setattr(fashion_mnist, "RESULTS", tmp_path)
    result = fashion_mnist.run(quick=False, workers=1)
    shipped = fashion_mnist._scenario_values()
    assert all(c["model"] == "scatternet" and c["dataset"] == "fashion-mnist"
               and c["alpha"] == 0.5 for c in calls)
    assert all(c["max-epsilon"] == math.inf for c in calls if c["dp-mode"] != "none")
    fed = [r for r in result["rows"] if r["setting"] == "federated"
           and r["mode"] != "record-central"]
    central = [r for r in result["rows"] if r["setting"] == "centralised"]
    assert [r["target"] for r in fed] == [None, 1.0, 3.0, 8.0]
    assert [r["target"] for r in central] == [None, 3.0]
    ones = [c for c in calls if c["clients"] == 1]
    assert len(ones) == 2 and all(c["partition"] == "iid" and c["server-momentum"] == 0
                                  for c in ones)
    # the federated rows run the scenario as shipped
    assert all({k: c[k] for k in shipped} == shipped for c in calls[:4])
    # the ablation: baseline first, the last recipe is the headline run (not rerun)
    abl = result["ablation"]
    assert [a["recipe"] for a in abl] == [label for label, _ in fashion_mnist.RECIPES]
    assert abl[0]["points"] is None and abl[-1]["final_accuracy"] == fed[2]["final_accuracy"]
    # the record-central scenario at each epsilon: its own rounds, rate and step
    central_dp = fashion_mnist._scenario_values(fashion_mnist.CENTRAL_DP_SCENARIO)
    noised_once = [c for c in calls if c["dp-mode"] == "record-central"]
    assert [c["target-epsilon"] for c in noised_once] == [1.0, 3.0, 8.0]
    assert all({k: c[k] for k in central_dp if k not in ("dp-mode", "target-epsilon",
                                                         "max-epsilon")}
               == {k: v for k, v in central_dp.items()
                   if k not in ("dp-mode", "target-epsilon", "max-epsilon")}
               for c in noised_once)
    assert all(c["record-sampling-rate"] > 0 for c in noised_once)
    assert len(calls) == 9 + sum(1 for _, ch in fashion_mnist.RECIPES if ch)
    assert abl[1]["points"] == pytest.approx(
        100 * (abl[1]["final_accuracy"] - abl[0]["final_accuracy"]))
    assert (tmp_path / fashion_mnist.PLOT).stat().st_size > 0
    meta = {"date": "d", "quick": False, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f", "seconds": 60.0}
    payload = {"meta": meta, "rounds": 5, "rows": [
        {"mode": "none", "target": None, "epsilon": None, "final_accuracy": 0.9}],
        "fashion_mnist": result}
    text = render({"utility": payload})
    headline = 100 * fed[2]["final_accuracy"]
    assert f"| federated | record | 3 | 3.00 | {headline:.1f} % |" in text
    assert "| centralised | none | - | - | 90.0 % | +0.0 |" in text
    assert "| federated | record-central | 3 | 3.00 |" in text
    assert "`record-central` rows: scenario `fashion-mnist-scatternet-central-dp`" in text
    assert fashion_mnist.RECIPES[1][0] in text and "points bought" in text


def test_utility_skips_fashion_mnist_with_the_reason_when_it_is_not_installed(monkeypatch):
    from bench.suites import utility
    from fedpriv.config import ConfigError
    from fedpriv.tasks import fashion_mnist as data

    def missing(directory):
        raise ConfigError("dataset-dir", f"{str(directory)!r} is not a directory")

    def must_not_run(quick):
        raise AssertionError("ran without its data")

    monkeypatch.setattr(data, "find_idx_files", missing)
    monkeypatch.setattr(utility.fashion_mnist, "run", must_not_run)
    result = utility._fashion_mnist_or_why_not(quick=True)
    assert "not installed" in result["skipped"] and "make data" in result["skipped"]
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    text = render({"utility": {"meta": meta, "rounds": 5, "rows": [
        {"mode": "none", "target": None, "epsilon": None, "final_accuracy": 0.9}],
        "fashion_mnist": result}})
    assert "Fashion-MNIST frontier skipped" in text and "make data" in text


def test_deployed_messages_are_split_into_flowers_stretches():
    from bench.suites.deploy import STRETCHES, message_times

    log = "\n".join(
        f"{stamp} INFO :      {text}" for stamp, text in [
            ("10:00:00.000", "Starting Flower SuperNode"),
            ("10:00:01.000", "Receiving: train.secagg_advertise message (ID: a)"),
            ("10:00:01.500", "Received successfully"),
            ("10:00:03.500", "Start `flwr-clientapp` process"),
            ("10:00:04.000", "Sending: train.secagg_advertise message (ID: b)"),
            ("10:00:04.250", "Sent successfully"),
            ("10:00:07.250", "Receiving: train message (ID: c)"),
            ("10:00:07.750", "Received successfully"),
            ("10:00:09.750", "Start `flwr-clientapp` process"),
            ("10:00:13.750", "Sending: train message (ID: d)"),
            ("10:00:14.000", "Sent successfully"),
        ])
    times = message_times(log)
    assert times["messages"] == 2
    assert times["stretches_s"] == pytest.approx(dict(zip(STRETCHES, [0.5, 2.0, 2.25, 0.25,
                                                                      3.0], strict=True)))


def test_the_tried_fashion_mnist_variations_are_run_and_reported_against_the_scenario(
        tmp_path, monkeypatch):
    # --explore: each variation once at epsilon 3, changing only what it names; the
    # README puts each beside the scenario's own epsilon-3 figure, then the limit's reason
    from bench.suites import fashion_mnist

    calls = []

    def fake_federate(values):
        calls.append(dict(values))
        return {"status": "completed", "epsilon": {"federation": 3.0},
                "final_accuracy": 0.86 - values["rounds"] / 10_000}

    monkeypatch.setattr(fashion_mnist, "federate", fake_federate)
    explored = fashion_mnist.explore(workers=1)
    shipped = fashion_mnist._scenario_values()
    assert len(calls) == len(fashion_mnist.EXPLORED)
    for call, (_, changes) in zip(calls, fashion_mnist.EXPLORED, strict=True):
        assert call["dp-mode"] == "record" and call["target-epsilon"] == 3.0
        assert {k: v for k, v in call.items() if k in shipped and k not in changes} == {
            k: v for k, v in shipped.items() if k not in changes}
        assert all(call[k] == v for k, v in changes.items())
    meta = {"date": "d", "quick": False, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f", "seconds": 60.0}
    head = {"setting": "federated", "mode": "record", "target": 3.0, "epsilon": 3.0,
            "final_accuracy": 0.875, "seconds": 60.0}
    text = "\n".join(report._fashion_mnist({
        "meta": meta, "rows": [head], "config": {"rounds": 40}, "scenario": "s",
        "data": "d", "plot": "p.png", "explored": explored}))
    first = explored["rows"][0]
    assert (f"| {first['variation']} | 3.00 | {100 * first['final_accuracy']:.1f} % | "
            f"{100 * (first['final_accuracy'] - 0.875):+.1f} |") in text
    assert "--explore" in text and "√n" in text
    # run again with those results: nothing is measured twice; a variation that is new
    # (here: one whose result was lost) runs alone, and the kept rows keep their dates
    calls.clear()
    lost = {**explored, "rows": explored["rows"][1:]}
    again = fashion_mnist.explore(workers=1, kept=lost)
    assert len(calls) == 1
    assert all(calls[0][k] == v for k, v in fashion_mnist.EXPLORED[0][1].items())
    assert [r["variation"] for r in again["rows"]] == [v for v, _ in fashion_mnist.EXPLORED]
    assert again["rows"][1:] == explored["rows"][1:]
    assert fashion_mnist.explore(workers=1, kept=again)["rows"] == again["rows"]
    assert len(calls) == 1


def test_the_round_and_deploy_reports_carry_every_ratio():
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    rnd = {"meta": meta, "rounds": 3, "local_epochs": 1, "clients": 10, "rows": [
        {"variant": "plain Flower FedAvg", "seconds_per_round": 1.0, "ratio_to_plain": 1.0,
         "runs": [0.8, 1.2], "final_accuracy": 0.5},
        {"variant": "Flower SecAgg+ + DP", "seconds_per_round": 4.0, "ratio_to_plain": 4.0,
         "final_accuracy": 0.4},
        {"variant": "fedpriv all", "seconds_per_round": 2.0, "ratio_to_plain": 2.0,
         "ratio_to_flower_secagg_dp": 0.5, "in_process_seconds_per_round": 0.25,
         "final_accuracy": 0.6}]}
    dep = {"meta": meta, "rounds": 2, "nodes": 2, "local_epochs": 1, "transport": "insecure",
           "fedpriv_run_config": "secagg=true", "rows": [
               {"variant": "plain deployed", "seconds_per_round": 10.0, "ratio_to_plain": 1.0,
                "messages_per_round": 1, "final_accuracy": 0.8,
                "stretches_s": {"pull the message": 0.5}},
               {"variant": "fedpriv deployed", "seconds_per_round": 40.0,
                "ratio_to_plain": 4.0, "messages_per_round": 5, "final_accuracy": 0.7,
                "stretches_s": {}}]}
    text = render({"round": rnd, "deploy": dep})
    assert "| fedpriv all | 2.000 | 2.00 | 0.50 | 0.250 | 0.600 |" in text
    assert "| plain Flower FedAvg (mean of 2 runs: 0.800, 1.200) | 1.000 | 1.00 |" in text
    assert "| Flower SecAgg+ + DP | 4.000 | 4.00 | - | - | 0.400 |" in text
    assert "no simulation engine: a round's own work" in text
    assert "| fedpriv deployed | 40.0 | 4.00 | 5 |" in text
    assert "fedpriv bench deploy --quick" in text and "time.sleep(3)" in text


def test_movielens_baselines_and_the_verdict_that_needs_the_dp_model_to_learn(tmp_path):
    from bench.suites.movielens import baselines
    from fedpriv.tasks.movielens import encode_ratings

    users = np.array([1, 1, 1, 2, 2, 2, 3, 3])
    items = np.array([10, 20, 30, 10, 20, 30, 10, 20])
    ratings = np.array([4.0, 2.0, 5.0, 3.0, 1.0, 4.0, 5.0, 3.0], dtype=np.float32)
    data = encode_ratings(users, items, ratings, test_fraction=0.34, seed=0)
    rows = {r["method"].split(" (")[0]: r["rmse"] for r in baselines(data)}
    train = data.train
    kept = train.x[train.x[..., 0] >= 0]  # (ratings, 3)
    held = data.test.x[(data.test.x[..., 2] == 2)]
    mu = kept[:, 1].mean()
    assert rows["global mean"] == pytest.approx(np.sqrt(((held[:, 1] - mu) ** 2).mean()))
    item_mean = {i: kept[kept[:, 0] == i, 1].mean() for i in np.unique(kept[:, 0])}
    pred = np.array([item_mean.get(i, mu) for i in held[:, 0]])
    assert rows["item mean"] == pytest.approx(np.sqrt(((held[:, 1] - pred) ** 2).mean()))
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    config = {"test-fraction": 0.2, "rating-factors": 0, "clients-per-round": 67,
              "clients": 671, "rounds": 30, "local-epochs": 5, "lr": 10.0,
              "dp:target-quantile": 0.2, "dp:target-epsilon": 5.0, "dp:delta": 1e-5}
    payload = {"meta": meta, "config": config, "people": 3, "items": 3,
               "train_ratings": 5, "held_out_ratings": 3, "gap": 0.04, "goal_gap": 0.1,
               "dp_beats_untrained": False, "goal_met": False,
               "rows": [{"method": "federated, user-level DP", "rmse": 0.97, "epsilon": 5.0}]}
    text = render({"movielens": payload})
    assert "4.0 %" in text and "not met: the DP model does not beat the untrained" in text


def test_tree_memory_sees_a_child_and_the_scale_report_renders_from_its_figures():
    """The sampler finds a child process's memory; the report reads every figure it shows."""
    import subprocess
    import sys

    from bench.suites.report import render
    from bench.suites.scale import TreeMemory

    child = subprocess.Popen(  # 64 MiB resident, then waits for its stdin to close
        [sys.executable, "-c", "import sys; b = b'1' * (64 << 20); print('ok', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ok"
        with TreeMemory(os.getpid(), interval=0.05) as memory:
            time.sleep(0.2)
    finally:
        child.communicate()
    got = memory.report()
    assert got["peak_rss_mib"]["ray_system"] >= 64  # the child: neither server nor worker
    assert got["peak_rss_mib"]["total"] > got["peak_rss_mib"]["server"] > 0
    row = {"final_accuracy": 0.8, "rounds": 2, "curve": [0.7, 0.8], "seconds_per_round": 1.0,
           "epsilon": None, "delta": None, "noise_multiplier": None, "clients_epsilon_max": None}
    payload = {"meta": {"quick": True, "date": "d", "cpus": 2, "device": "cpu", "torch": "t",
                        "opacus": "o", "flwr": "f"},
               "scenario": "s", "config": {"clients": "1000", "clients-per-round": "100"},
               "cpus": 2, "goal_points": 10.0,
               "accuracy": {"none": row, "user": {**row, "final_accuracy": 0.75, "epsilon": 5.0,
                                                  "delta": 1e-5, "noise_multiplier": 0.8,
                                                  "clients_epsilon_max": 9.0}},
               "scale": [{"clients": 1000, "rounds": 3, "seconds_per_round": 12.0,
                          "first_round_seconds": 60.0, **got, "client_ledgers": 250,
                          "client_files": 500, "client_mib": 40.0, "identity_files": 1001},
                         {"clients": 300, "rounds": 2, "seconds_per_round": 5.0,
                          "date": "2026-12-02T07:00:00+00:00", "load_average": 0.25,
                          "feature_cache_files": 12,
                          "first_round_seconds": 30.0, **got, "client_ledgers": 90,
                          "client_files": 180, "client_mib": 12.0, "identity_files": 301}]}
    text = render({"scale": payload})
    assert "Gap: **5.0 points**" in text
    # each row says its own rounds and, when recorded, when and at what load it ran
    assert "| 1000 | 3 | before load was recorded | 12.0 | 60 |" in text
    assert ("| 300 | 2 | 2026-12-02T07:00:00+00:00; 0.2; 12 cached coefficient files | "
            "5.0 | 30 |") in text


def test_the_goals_table_gives_every_ratio_its_goal_and_says_what_limits_a_missed_one():
    meta = {"date": "2026-12-02T10:00:00+00:00", "quick": False, "cpus": 2, "device": "cpu",
            "torch": "t", "opacus": "o", "flwr": "f"}
    results = {
        "dpsgd": {"meta": meta, "rows": [
            {"device": "cpu", "model": "mlp", "mode": "bookkeeping", "examples_per_s": 1.0,
             "ratio_to_non_private": 0.5, "batch": 64},
            {"device": "cpu", "model": "cnn", "mode": "bookkeeping", "examples_per_s": 1.0,
             "ratio_to_non_private": 0.75, "batch": 64},
            {"device": "cpu", "model": "cnn", "mode": "bookkeeping", "examples_per_s": 1.0,
             "ratio_to_non_private": 0.6, "batch": 1024}]},
        "edge": {"meta": meta, "goal_peak_ratio": 1.2, "examples": 1, "repeats": 1,
                 "rows": [{"client": "fedpriv", "config": "record-DP", "peak_ratio": 1.25}]},
    }
    from bench.suites.goals import goals_table

    text = "\n".join(goals_table(results))
    mlp = next(ln for ln in text.splitlines() if "MLP, batch 64" in ln)
    cnn = next(ln for ln in text.splitlines() if "CNN, batch 64" in ln)
    edge = next(ln for ln in text.splitlines() if "edge client" in ln)
    assert "0.50×" in mlp and "≥ 0.7" in mlp and "**no**" in mlp and "noise draw" in mlp
    assert "Would lift it" in mlp
    assert "0.75×" in cnn and "| yes |" in cnn and "positions" not in cnn
    big = next(ln for ln in text.splitlines() if "CNN, batch 1024" in ln)  # its own reason
    assert "**no**" in big and "grows with the batch" in big and "Would lift it" in big
    assert "1.25×" in edge and "≤ 1.2" in edge and "scipy" in edge
    assert "round" not in text  # no suite, no row
