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


def test_library_error_is_one_line_without_traceback(tmp_path):
    env = {"GREFEL_DATA_ROOT": str(tmp_path), "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "grefel_cli.main", "inspect", "no-such-dataset"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "no-such-dataset" in lines[0]


def _leaf_commands():
    """(argv, command) of every command, those of sub-groups (`grefel study plan`) included."""
    import typer.main

    todo = [([], typer.main.get_command(app))]
    while todo:
        path, group = todo.pop(0)
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                todo.append(([*path, name], cmd))
            else:
                yield [*path, name], cmd


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    from grefel.core.io import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_option_help_is_shown_whole():
    """Rich reads ``[...]`` in help text as markup and drops it: every option's help must survive."""
    import re

    checked = 0
    for argv, cmd in _leaf_commands():
        name = " ".join(argv)
        r = CliRunner().invoke(app, [*argv, "--help"], terminal_width=200)
        assert r.exit_code == 0, name
        shown = re.sub(r"[\s│]+", " ", r.output)
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option" and p.help:
                want = re.sub(r"\s+", " ", p.help.replace("\\[", "["))
                assert want[:60] in shown, f"grefel {name} {p.opts[0]}: help shown as something else than {want[:60]!r}"
                checked += 1
    assert checked > 40


def test_help_examples_fit_80_columns_and_prose_is_reflowed():
    """At 80 columns every example line shows whole (copy-pasteable) and prose is not ragged."""
    import inspect

    examples = 0
    for argv, cmd in _leaf_commands():
        name = " ".join(argv)
        r = CliRunner().invoke(app, [*argv, "--help"], terminal_width=80)
        shown = [line.strip() for line in r.output.splitlines()]
        doc = inspect.cleandoc(cmd.callback.__doc__ or "")
        for line in doc.splitlines():
            if line.startswith("  ") and line.strip():  # an example (or its continuation)
                assert line.strip() in shown, f"grefel {name} --help at 80 columns breaks the example {line.strip()!r}"
                examples += 1
        # the prose: no rendered line of the description ends far short of the width, except a paragraph's last
        desc = r.output.split("Examples")[0].splitlines()[3:]
        texts = [line.strip() for line in desc]
        for a, b in zip(texts, texts[1:]):
            if a and b:  # two lines of one paragraph: the first is filled
                assert len(a) > 50, f"grefel {name} --help: ragged line {a!r}"
    assert examples > 30


def test_a_dataloader_worker_error_is_printed_as_its_own_line():
    from grefel.core.errors import DatasetError, error_line

    wrapped = DatasetError(
        "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DatasetError(msg)\n'
        "grefel.core.errors.DatasetError: shard s.h5 of ferg is damaged: rebuild it\n"
    )
    assert error_line(wrapped) == "shard s.h5 of ferg is damaged: rebuild it"
    assert error_line(DatasetError("plain: one line")) == "plain: one line"
