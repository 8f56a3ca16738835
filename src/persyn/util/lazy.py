"""Packages whose names are imported on first use, so that importing the package (and the
command line's start) does not pay for torch, transformers or sqlite:

    __all__, __getattr__, __dir__ = lazy_exports(__name__, {".store": ["RunStore"], ...})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, Iterable[str]], *also: str
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """`__all__`, `__getattr__` and `__dir__` of `package`: `modules` maps a module (relative to
    `package` when it starts with a dot) to the names it defines; `also` adds names the package
    defines itself."""
    where = {name: module for module, names in modules.items() for name in names}
    names = sorted([*also, *where])

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return list(names)

    return names, __getattr__, __dir__
