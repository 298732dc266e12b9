"""Every Python package in the source tree must be listed in pyproject.toml, or a wheel misses it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_all_packages_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapped = {v: k for k, v in cfg.get("package-dir", {}).items()}
    found = set()
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(ROOT).as_posix()
        top = rel.split("/")[0]
        if top in mapped:
            found.add(mapped[top] + rel[len(top) :].replace("/", "."))
        elif top in ("grefel", "grefel_cli"):
            found.add(rel.replace("/", "."))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"


def test_paper_results_shipped():
    from importlib.resources import files

    text = files("grefel.report_assets").joinpath("paper-results.csv").read_text()
    assert "T1,POSTER++" in text or "POSTER" in text
