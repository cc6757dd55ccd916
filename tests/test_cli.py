"""The ``fedpriv`` command line: bad input in-process, the happy path as a real process."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpriv.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(("args", "fragments"), [
    (["--set", "rounds=0"], ["rounds: must be in [1, inf), got 0"]),
    (["--set", "alpha=0"], ["alpha: must be in (0, inf), got 0"]),
    (["--set", "alpha=-1"], ["alpha", "got -1"]),
    (["--set", "dataset=nope"], ["dataset: must be one of {digits, synthetic, fashion-mnist, "
                                 "mnist, fine-foods}, got 'nope'"]),
    (["--set", "strategy=median"], ["strategy: must be one of {fedavg, fedprox, fedadam,"]),
    (["--set", "strategy=krum", "--set", "secagg=true"], ["krum needs each client's own"]),
    (["--set", "clients=5000"], ["clients: must be at most the 1437 training examples",
                                 "got 5000"]),
    (["--set", "bogus=1"], ["bogus: unknown key; valid keys are:", "rounds", "local-epochs",
                            "clients-per-round"]),
    (["--set", "rounds"], ["--set takes KEY=VALUE, got 'rounds'"]),
    (["fashion-mnist", "--set", "dataset-dir=/nowhere/[data]"],
     ["dataset-dir: '/nowhere/[data]' is not a directory", "make data"]),
    (["no-such-scenario"], ["no-such-scenario", "digits-iid", "synthetic-1-1"]),
])
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(tmp_path, args, fragments):
    out = tmp_path / "run"
    result = invoke("simulate", *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich may wrap long lines
    for fragment in fragments:
        assert fragment in text
    assert not out.exists()


def test_bad_scenario_file_names_the_file_and_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('[config]\nrounds = "many"\n')
    result = invoke("simulate", str(bad), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "rounds: must be an integer, got 'many'" in " ".join(result.output.split())


def test_existing_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "config.toml").write_text("kept")
    result = invoke("simulate", "--out", str(tmp_path))
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert (tmp_path / "config.toml").read_text() == "kept"


def test_list_and_keys():
    listed = invoke("simulate", "--list")
    assert listed.exit_code == 0
    for name in ("default", "digits-iid", "synthetic-1-1", "synthetic-0-0"):
        assert name in listed.output
    keys = invoke("simulate", "--keys")
    assert keys.exit_code == 0 and "local-epochs" in keys.output


def run_cli(*args, timeout=300):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    exe = Path(sys.executable).with_name("fedpriv")
    return subprocess.run([str(exe), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_a_private_secure_run_on_rays_engine_writes_a_run_directory_that_audits(tmp_path):
    # One run on Ray's engine exercises what each mode adds on top of the others:
    # record-level DP-SGD, secure aggregation, and clients that vanish mid-round (the
    # dropout path). Flower's engine costs ~25 s to start and stop, whatever runs on it.
    out = tmp_path / "run"
    proc = run_cli("simulate", "--set", "rounds=3", "--set", "clients=6",
                   "--set", "local-epochs=1", "--set", "dp-mode=record",
                   "--set", "noise-multiplier=1.0", "--set", "secagg=true",
                   "--set", "dropout-rate=0.3", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n in (1, 2, 3):
        assert f"round   {n}" in proc.stdout
    assert "final accuracy" in proc.stdout and "ε" in proc.stdout and "secagg" in proc.stdout
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["scenario"] == "default" and config["config"]["rounds"] == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["clients"] == 6
    assert summary["secagg"]["enabled"] and summary["rounds"] == 3
    assert summary["final_accuracy"] > summary["initial_accuracy"]
    assert (out / "model.safetensors").stat().st_size > 0
    audit = run_cli("audit", str(out), "--json", timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    fed = max(s["epsilon_pld"] for s in report["scopes"] if "clients" not in s["ledger"])
    assert fed == pytest.approx(summary["epsilon"]["federation"])


def test_version_prints_and_exits_zero():
    from typer.testing import CliRunner

    from fedpriv.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("fedpriv ")
