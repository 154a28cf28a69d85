"""Import every module of a package whose name starts with a prefix (agents, CLI commands, demo stages, routes).

Each capability adds its own files; nothing central needs editing.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_all(package: str, prefix: str = "") -> list[ModuleType]:
    pkg = importlib.import_module(package)
    modules = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith(prefix) and not info.name.startswith("_"):
            modules.append(importlib.import_module(f"{package}.{info.name}"))
    return modules
