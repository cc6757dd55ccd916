"""The ``fedpriv`` command line, in-process (the real-process runs: test_resume, test_signals)."""


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
                                 "mnist, fine-foods, movielens}, got 'nope'"]),
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


def test_version_prints_and_exits_zero():
    from typer.testing import CliRunner

    from fedpriv.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("fedpriv ")
