"""Shared fixtures: keep Ray and Flower on loopback and quiet in every test."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

from fedpriv.config import RunConfig  # noqa: E402


@pytest.fixture
def small_cfg() -> RunConfig:
    """A digits run small enough for in-process tests."""
    return RunConfig.from_mapping({
        "rounds": 2, "clients": 4, "local-epochs": 1, "partition": "iid",
    }).resolved()
