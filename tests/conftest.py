"""Shared fixtures: keep Ray and Flower on loopback and quiet in every test."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# One intra-op thread per process, here and in every process a test starts (they inherit
# the environment): the suite runs two workers on two cores, and a deployment test three
# devices besides. With torch's default (a thread per core) each process's OpenMP threads
# spin against the others': one SGD step of a 60x10 logistic regression took 47 ms instead
# of 0.34 ms with the other core busy (measured). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Data layouts (test splits, client partitions) are kept on disk and shared by the
# processes a run starts (fedpriv.tasks.index_cache); the suite keeps its own, made by the
# first process (under xdist the controller: the workers inherit it) and removed on exit.
if "FEDPRIV_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["FEDPRIV_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedpriv-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FEDPRIV_CACHE_DIR"], ignore_errors=True)
# Simulated clients keep their replay copies in a private state directory
# (fedpriv.durable.private_dir): the suite's go to a temporary one, not the user's.
if "FEDPRIV_STATE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["FEDPRIV_STATE_DIR"] = tempfile.mkdtemp(prefix="fedpriv-test-state-")
    atexit.register(shutil.rmtree, os.environ["FEDPRIV_STATE_DIR"], ignore_errors=True)

import pytest  # noqa: E402

from fedpriv.config import RunConfig  # noqa: E402


@pytest.fixture
def small_cfg() -> RunConfig:
    """A digits run small enough for in-process tests."""
    return RunConfig.from_mapping({
        "rounds": 2, "clients": 4, "local-epochs": 1, "partition": "iid",
    }).resolved()


# Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), the real deployments
# mostly wait on Flower's polling and so run beside the rest of the suite, one at a time,
# on one worker; the simulations on Ray's engine, each of which takes both cores, run one
# at a time on the other (two Ray runs at once took three times as long each: measured).
# Everything else is spread freely.
_GROUPS = {"test_deploy.py": "deployment", "test_deploy_faults.py": "deployment"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each slow test in its xdist group (no effect without ``--dist loadgroup``)."""
    for item in items:
        if item.get_closest_marker("slow") is None:
            continue
        group = _GROUPS.get(item.path.name, "ray-engine")
        item.add_marker(pytest.mark.xdist_group(group))
