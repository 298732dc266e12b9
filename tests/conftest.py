"""Shared test fixtures. Tests never touch the user's data root: GREFEL_DATA_ROOT points into tmp."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("grefel-data-root")
    monkeypatch.setenv("GREFEL_DATA_ROOT", str(root))
    yield root
