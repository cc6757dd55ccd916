"""One run-config key's value: its field metadata, parsing, range check and error.

:mod:`fedpriv.config` declares the keys (a frozen dataclass whose fields carry
:func:`field_meta`); this module turns what a user typed (TOML, ``--set``, Flower's
run config) into a field's type and checks it against the field's range, naming the
key, the allowed values and the value given when it does not fit.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

__all__ = ["ConfigError", "allowed", "check_range", "check_ranges", "coerce", "field_meta",
           "key_of", "plain", "section_keys", "show"]


class ConfigError(ValueError):
    """A run-config key is unknown or its value is out of its domain."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def field_meta(help_: str, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, hi_open: bool = False,
               key: str | None = None) -> dict[str, Any]:
    """A run-config field's metadata: its help, its range (open or closed ends) and key.

    ``key`` is the run-config key when it is not the field's name in kebab case (the
    field ``enabled`` of the secure-aggregation section is the key ``secagg``).
    """
    return {"help": help_, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open,
            "key": key}


def key_of(f: dataclasses.Field[Any]) -> str:
    """The run-config key of a section's field: its metadata's, else its kebab-case name."""
    return f.metadata.get("key") or f.name.replace("_", "-")


def section_keys(section: Any) -> dict[str, dataclasses.Field[Any]]:
    """Map each run-config key of a config section (class or instance) to its field."""
    return {key_of(f): f for f in dataclasses.fields(section)}


def check_ranges(section: Any) -> None:
    """Check every field of a config section against its range (ConfigError naming the key)."""
    for key, f in section_keys(section).items():
        check_range(key, f, getattr(section, f.name))


def _enum_type(f: dataclasses.Field[Any]) -> type[enum.Enum] | None:
    default = f.default
    return type(default) if isinstance(default, enum.Enum) else None


def allowed(f: dataclasses.Field[Any]) -> str:
    """The field's domain as the user reads it: ``{a, b}`` or ``[lo, hi)``, or ``""``."""
    etype = _enum_type(f)
    if etype is not None:
        return "{" + ", ".join(str(m.value) for m in etype) + "}"
    lo, hi = f.metadata["lo"], f.metadata["hi"]
    if lo is None and hi is None:
        return ""
    left = "(" if f.metadata["lo_open"] else "["
    right = ")" if f.metadata["hi_open"] or hi is None else "]"
    lo_text = "-inf" if lo is None else f"{lo:g}"
    hi_text = "inf" if hi is None else f"{hi:g}"
    return f"{left}{lo_text}, {hi_text}{right}"


def show(value: Any) -> str:
    """A value as the user would have typed it: ``0`` rather than ``0.0``."""
    return f"{value:g}" if isinstance(value, float) else repr(value)


def plain(value: Any) -> bool | int | float | str:
    """An enum member as its value; anything else unchanged (TOML and JSON safe)."""
    return value.value if isinstance(value, enum.Enum) else value


def coerce(key: str, f: dataclasses.Field[Any], raw: Any) -> Any:
    """``raw`` (typed by a user or read from TOML) as the field's type, or ConfigError."""
    etype = _enum_type(f)
    default = f.default
    if etype is not None:
        try:
            return etype(str(raw).strip().lower())
        except ValueError:
            raise ConfigError(
                key, f"must be one of {allowed(f)}, got {raw!r}"
            ) from None
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off"}:
            return False
        raise ConfigError(key, f"must be true or false, got {raw!r}")
    if isinstance(default, int):
        if isinstance(raw, bool):
            raise ConfigError(key, f"must be an integer, got {raw!r}")
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(key, f"must be an integer, got {raw!r}") from None
    if isinstance(default, float):
        if isinstance(raw, bool):
            raise ConfigError(key, f"must be a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(key, f"must be a number, got {raw!r}") from None
        if math.isnan(value):
            raise ConfigError(key, f"must be a number, got {raw!r}")
        return value
    return str(raw)


def check_range(key: str, f: dataclasses.Field[Any], value: Any) -> None:
    """Raise ConfigError naming ``key`` if ``value`` is outside the field's range."""
    meta = f.metadata
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None or isinstance(value, (str, enum.Enum)):
        return
    bad = (
        (lo is not None and (value < lo or (meta["lo_open"] and value == lo)))
        or (hi is not None and (value > hi or (meta["hi_open"] and value == hi)))
    )
    if bad:
        raise ConfigError(key, f"must be in {allowed(f)}, got {show(value)}")
