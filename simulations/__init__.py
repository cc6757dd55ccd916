"""Scenarios and the driver over Flower's simulation engine."""

from __future__ import annotations

from simulations.driver import simulate
from simulations.scenarios import Scenario, ScenarioError, list_scenarios, load_scenario

__all__ = ["Scenario", "ScenarioError", "list_scenarios", "load_scenario", "simulate"]
