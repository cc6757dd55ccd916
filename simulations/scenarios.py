"""Named scenarios: TOML files of run-config keys, shipped in ``simulations/scenarios/``.

A scenario file::

    description = "one line shown by `fedpriv simulate --list`"

    [config]
    dataset = "digits"
    partition = "iid"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fedpriv.config import RunConfig

__all__ = ["DEFAULT_SCENARIO", "Scenario", "ScenarioError", "list_scenarios", "load_scenario"]

DEFAULT_SCENARIO = "default"


class ScenarioError(ValueError):
    """A scenario is unknown or malformed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A named set of run-config values."""

    name: str
    description: str
    values: dict[str, Any]
    source: str


def _shipped() -> dict[str, Path]:
    root = resources.files("simulations") / "scenarios"
    return {
        Path(str(p)).stem: Path(str(p))
        for p in root.iterdir()
        if str(p).endswith(".toml")
    }


def _parse(path: Path, name: str) -> Scenario:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read scenario ({err})") from err
    unknown = set(doc) - {"description", "config"}
    if unknown:
        raise ScenarioError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; a scenario has "
            "`description` and a [config] table"
        )
    values = doc.get("config", {})
    if not isinstance(values, dict):
        raise ScenarioError(f"{path}: [config] must be a table of run-config keys")
    return Scenario(name=name, description=str(doc.get("description", "")),
                    values=values, source=str(path))


def list_scenarios() -> list[Scenario]:
    """Every shipped scenario, by name."""
    return [_parse(path, name) for name, path in sorted(_shipped().items())]


def load_scenario(name_or_path: str | None) -> Scenario:
    """A shipped scenario by name, or a scenario TOML file by path.

    Raises
    ------
    ScenarioError
        Naming the shipped scenarios when ``name_or_path`` is neither.
    """
    shipped = _shipped()
    if name_or_path is None:
        name_or_path = DEFAULT_SCENARIO
    if name_or_path in shipped:
        return _parse(shipped[name_or_path], name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return _parse(path, path.stem)
    raise ScenarioError(
        f"scenario {name_or_path!r} is neither a shipped scenario "
        f"({', '.join(sorted(shipped))}) nor a .toml file"
    )


def check_scenario(s: Scenario) -> RunConfig:
    """Validate a scenario's values (raises :class:`fedpriv.config.ConfigError`)."""
    return RunConfig.from_mapping(s.values)
