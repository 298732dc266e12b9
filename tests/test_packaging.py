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


def test_the_data_folders_shadow_no_installed_package(tmp_path):
    """datasets/ and reports/ at the repository root are plain folders, not Python packages: run
    from the root, `import datasets` still finds an installed package of that name."""
    import subprocess
    import sys

    site = tmp_path / "site"
    for name in ("datasets", "reports"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("INSTALLED = True\n")
    assert not (ROOT / "datasets" / "__init__.py").exists() and not (ROOT / "reports" / "__init__.py").exists()
    code = "import datasets, reports; print(datasets.INSTALLED and reports.INSTALLED)"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_dataset_definitions_are_found_as_package_data():
    from importlib.resources import files

    names = sorted(p.name for p in files("grefel.definitions").iterdir() if p.name.endswith(".toml"))
    assert names == [f"{d}.toml" for d in ("affectnet", "affwild2", "ferg", "ferplus", "jaffe", "rafdb")]
