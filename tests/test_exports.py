"""Every package declares ``__all__`` and every exported name exists."""

import importlib

import pytest

PACKAGES = ["fedpriv", "fedpriv.config", "fedpriv.messages", "fedpriv.tasks", "server",
            "server.rundir", "server.strategy", "server.federation", "client", "client.app",
            "strategies", "strategies.updates", "strategies.dp_fedavg", "simulations",
            "simulations.scenarios", "fedpriv.privacy", "fedpriv.audit",
            "fedpriv.audit_report", "server.privacy",
            "client.privacy", "client.secagg", "server.secagg", "strategies.update_mean",
            "fedpriv.secagg", "fedpriv.certs", "fedpriv.ddp_plan", "fedpriv.privacy.ddp_audit",
            "strategies.distributed_dp"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_import(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for exported in module.__all__:
        assert hasattr(module, exported), f"{name}.{exported}"


def test_server_and_client_never_import_each_other():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for side, other in (("server", "client"), ("client", "server")):
        pattern = re.compile(rf"^\s*(from|import)\s+{other}\b", re.MULTILINE)
        for f in (root / side).rglob("*.py"):
            assert not pattern.search(f.read_text()), f
