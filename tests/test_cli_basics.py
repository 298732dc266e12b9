import subprocess
import sys

from typer.testing import CliRunner

from grefel_cli.main import app


def test_version_and_help():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("grefel ")
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0 and "GReFEL" in r.output


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "grefel_cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "grefel" in out.stdout
