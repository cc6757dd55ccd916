"""Lazy package exports (PEP 562), so that importing a package costs only what is used.

A ClientApp in deployment is a fresh process for every message (Flower's SuperExec
starts one per message): four of a secure-aggregation round's five messages need no torch,
no dp-accounting and no scikit-learn, and importing them would cost seconds per message.
A package lists ``name -> submodule`` and gets a module ``__getattr__`` that imports the
submodule on first use; static type checkers still see the names through
``if TYPE_CHECKING:`` imports in the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    where
        Submodule (relative to ``package``) to the names it exports.
    """
    owner = {name: sub for sub, names in where.items() for name in names}
    if len(owner) != sum(len(names) for names in where.values()):
        raise ValueError(f"{package}: a name is exported by two submodules")

    # A name that is also its submodule's name (``discrete_gaussian`` in
    # ``discrete_gaussian``) loads now: importing the submodule binds the module object
    # to that attribute of the package, which would hide the function from __getattr__.
    package_dict = importlib.import_module(package).__dict__
    for name, sub in owner.items():
        if name == sub:
            package_dict[name] = getattr(importlib.import_module(f"{package}.{sub}"), name)

    def __getattr__(name: str) -> Any:
        sub = owner.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        importlib.import_module(package).__dict__[name] = value  # next lookups are direct
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(owner))

    return __getattr__, __dir__
