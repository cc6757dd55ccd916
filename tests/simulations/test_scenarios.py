import pytest

from simulations.scenarios import ScenarioError, check_scenario, list_scenarios, load_scenario


def test_every_shipped_scenario_is_valid():
    names = [s.name for s in list_scenarios()]
    assert {"default", "digits-iid", "synthetic-1-1", "synthetic-0-0"} <= set(names)
    for s in list_scenarios():
        check_scenario(s).resolved()
        assert s.description


def test_no_argument_is_the_embedded_default():
    s = load_scenario(None)
    cfg = check_scenario(s).resolved()
    assert s.name == "default"
    data = cfg.data
    assert (data.dataset.value, cfg.training.clients, data.partition.value, data.alpha) == (
        "digits", 10, "dirichlet", 0.5)


def test_scenario_from_a_path(tmp_path):
    f = tmp_path / "tiny.toml"
    f.write_text('description = "mine"\n[config]\nrounds = 1\n')
    s = load_scenario(str(f))
    assert s.name == "tiny" and check_scenario(s).training.rounds == 1


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match="digits-iid"):
        load_scenario("nope")


def test_malformed_toml_names_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[config\n")
    with pytest.raises(ScenarioError, match="bad.toml"):
        load_scenario(str(f))
