"""Entry point of the `grefel` console script: imports every command module, then runs the app."""

from __future__ import annotations

import importlib
import pkgutil

import grefel_cli
from grefel_cli.app import app

_SKIP = {"app", "main"}
for _m in sorted(pkgutil.iter_modules(grefel_cli.__path__), key=lambda m: m.name):
    if _m.name not in _SKIP and not _m.name.startswith("_"):
        importlib.import_module(f"grefel_cli.{_m.name}")

if __name__ == "__main__":
    app()
