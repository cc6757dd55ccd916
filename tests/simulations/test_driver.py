import torch  # noqa: F401  (imported by the driver; loaded at collection, as the suite does)

from fedpriv.config import RunConfig
from simulations.driver import RAY_ADDRESS, _backend_config


def test_without_a_cluster_address_the_run_starts_its_own_loopback_ray(monkeypatch):
    monkeypatch.delenv(RAY_ADDRESS, raising=False)
    cfg = RunConfig.from_mapping({"client-cpus": 1, "device": "cpu"})
    init = _backend_config(cfg)["init_args"]
    assert init["address"] == "local"  # never a cluster someone else started here
    assert init["_node_ip_address"] == "127.0.0.1" and init["num_cpus"] >= 1


def test_with_a_cluster_address_it_joins_and_leaves_resources_to_the_cluster(monkeypatch):
    monkeypatch.setenv(RAY_ADDRESS, "10.0.0.5:6379")
    cfg = RunConfig.from_mapping({"client-cpus": 2, "device": "cpu"})
    backend = _backend_config(cfg)
    init = backend["init_args"]
    assert init["address"] == "10.0.0.5:6379"
    # Ray refuses these when connecting to an existing cluster
    assert not {"num_cpus", "num_gpus", "_node_ip_address"} & set(init)
    assert backend["client_resources"] == {"num_cpus": 2.0, "num_gpus": 0.0}
