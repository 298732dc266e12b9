"""The study file: grid expansion, stable run names, label sets, baselines, one-line errors with the
line, and settings -> `grefel train` arguments that the real CLI parses back to the same TrainConfig."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
from typer.testing import CliRunner

from grefel.study.spec import StudyFileError, parse_study, run_argv, slurm_minutes
from grefel_cli.main import app

STUDY = """\
[study]
dataset = "ferg"
seeds = 2

[train]
preset = "tiny"
epochs = 16
lambda_center = 0.1

[grid]
labels = ["clean", "sym20", "asym40-s1"]
reliability = ["both", "none"]
num_anchors = [10, 4]
loss = [
  { name = "cls", lambda_anchor = 0.0, lambda_center = 0.0 },
  { name = "all" },
]
"""


def _parse(text=STUDY, tmp_path=None):
    path = (tmp_path / "s.toml") if tmp_path else None
    if path:
        path.write_text(text)
    return parse_study(text, path)


def test_grid_expands_to_every_combination_times_every_seed():
    study = _parse()
    assert len(study.runs) == 3 * 2 * 2 * 2 * 2
    names = [r.name for r in study.runs]
    assert len(set(names)) == len(names)
    run = study.run("sym20-rb_none-K4-cls-s1")
    assert run.seed == 1 and run.cell == {"labels": "sym20", "reliability": "none", "num_anchors": "4", "loss": "cls"}
    s = run.settings
    assert (s["labels"], s["reliability"], s["num_anchors"], s["seed"], s["dataset"]) == ("sym20", "none", 4, 1, "ferg")
    assert s["lambda_anchor"] == 0.0 and s["lambda_center"] == 0.0  # the setup overrides [train]
    assert study.run("clean-rb_both-K10-all-s0").settings["lambda_center"] == 0.1  # [train] kept otherwise


def test_run_names_come_from_the_values_not_the_order():
    """Adding a seed, a grid value or reordering values keeps every existing run's name and settings."""
    before = {r.name: r.settings for r in _parse().runs}
    grown = STUDY.replace("seeds = 2", "seeds = [0, 1, 5]").replace('["both", "none"]', '["none", "mhsa", "both"]')
    after = {r.name: r.settings for r in _parse(grown).runs}
    assert set(before) < set(after) and all(after[n] == s for n, s in before.items())
    assert "asym40-s1-rb_mhsa-K10-all-s5" in after


def test_label_sets_from_names_tables_or_the_dataset():
    text = STUDY.replace('"asym40-s1"]', '"asym40-s1", "mine", "theirs"]') + (
        '\n[label_sets]\nmine = { noise = 0.3, mode = "asymmetric", seed = 4 }\n'
    )
    sets = _parse(text).label_sets
    assert (sets["sym20"].noise, sets["sym20"].mode, sets["sym20"].seed) == (0.2, "symmetric", 0)
    assert (sets["asym40-s1"].noise, sets["asym40-s1"].mode, sets["asym40-s1"].seed) == (0.4, "asymmetric", 1)
    assert (sets["mine"].noise, sets["mine"].mode, sets["mine"].seed) == (0.3, "asymmetric", 4)
    assert sets["theirs"].noise is None  # must exist in the dataset
    assert "clean" not in sets


def test_baselines_default_and_override():
    assert _parse().baselines == {"labels": "clean", "reliability": "none", "num_anchors": "4", "loss": "cls"}
    text = STUDY + '\n[baseline]\nloss = "all"\nnum_anchors = 10\n'
    assert _parse(text).baselines == {"labels": "clean", "reliability": "none", "num_anchors": "10", "loss": "all"}


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("lambda_center = 0.1", "lamda_center = 0.1", 8, ["unknown setting 'lamda_center'", "lambda_center"]),
        ("num_anchors = [10, 4]", "num_anchors = [10, 0]", 13, ["num_anchors", "must be >= 1 (got 0)"]),
        (
            '["both", "none"]',
            '["both", "off"]',
            12,
            ["reliability", "must be one of both, anchors, mhsa, none (got 'off')"],
        ),
        ('{ name = "all" }', '{ name = "all", dropot = 0.2 }', 16, ["unknown setting 'dropot'", "dropout"]),
        ("epochs = 16", 'epochs = "16"', 7, ["epochs", "must be an integer (got '16')"]),
        ("epochs = 16", "seed = 3", 7, ["'seed' cannot be set", "seeds in [study]"]),
        ("seeds = 2", "seeds = 0", 3, ["seeds = 0"]),
        ("[grid]", "[gird]", 10, ["unknown table 'gird'", "grid"]),
        ("epochs = 16", "epochs = [16", 8, ["not valid TOML"]),
        ('name = "cls",', "", 14, ["needs name"]),
        ("[grid]", '[baseline]\nreliability = "off"\n\n[grid]', 11, ["baseline reliability", "both, none"]),
    ],
)
def test_bad_study_files_give_one_line_with_the_key_and_its_line(tmp_path, old, new, line, words):
    assert old in STUDY
    with pytest.raises(StudyFileError) as e:
        _parse(STUDY.replace(old, new, 1), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 's.toml'}:{line}: "), msg
    for w in words:
        assert w in msg, msg


def test_plan_prints_names_and_commands_and_bad_files_exit_with_one_line(tmp_path):
    (tmp_path / "rb.toml").write_text(STUDY)
    res = CliRunner().invoke(app, ["study", "plan", str(tmp_path / "rb.toml")])
    assert res.exit_code == 0, res.output
    assert "48 runs" in res.output and "sym20-rb_none-K4-cls-s1" in res.output
    assert "--labels sym20 --preset tiny --reliability none --num-anchors 4" in res.output
    (tmp_path / "bad.toml").write_text(STUDY.replace("epochs = 16", "epochs = -1"))
    res = CliRunner().invoke(app, ["study", "plan", str(tmp_path / "bad.toml")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().count("\n") == 0 and "bad.toml:7: bad value for epochs" in res.output


def test_train_argv_is_parsed_by_the_cli_into_the_same_config(monkeypatch):
    """The printed command is what runs: the CLI turns it back into exactly the study's settings."""
    import grefel.training.loop
    from grefel.study.job import train_command

    text = STUDY.replace(
        "lambda_center = 0.1",
        "lambda_center = 0.1\naugment = false\nrefine = true\ncompile = false\nchannels_last = true\nn_pg = 0\n"
        'lr = 1e-05\nmodel_args = { encoder = { depth = 1 }, attn_heads = 2 }\ndevice = "cpu"\nflip = 0.25',
    )
    study = parse_study(text)
    seen = []
    monkeypatch.setattr(grefel.training.loop, "train", lambda cfg: seen.append(cfg))
    for run in (study.run("clean-rb_both-K10-all-s0"), study.run("asym40-s1-rb_none-K4-cls-s1")):
        args = train_command(run)
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        cfg = seen.pop()
        want = {**run.settings, "run_dir": "runs", "name": run.name}
        if want["labels"] == "clean":
            want["labels"] = None
        got = {k: getattr(cfg, k) for k in want}
        assert got == want, shlex.join(args)
        defaults = {
            f.name: f.default for f in dataclasses.fields(grefel.training.loop.TrainConfig) if f.name not in want
        }
        assert all(getattr(cfg, k) == v for k, v in defaults.items() if k != "model_args")


def test_train_argv_conventions():
    assert run_argv({"augment": False, "compile": False, "refine": True, "channels_last": True}) == [
        "--refine",
        "--no-augment",
        "--no-compile",  # every switch has both forms: the command states each setting given
        "--channels-last",
    ]
    assert run_argv({"model_args": {"encoder": {"depth": 1}}, "lr": 0.001, "labels": "clean", "delta": None}) == [
        "--model-arg",
        'encoder={"depth": 1}',
        "--lr",
        "0.001",
    ]


def test_slurm_time_formats():
    assert [slurm_minutes(t) for t in (240, "90", "90:30", "4:00:00", "1-00", "1-02:30", "2-00:00:00")] == [
        240,
        90,
        91,
        240,
        1440,
        1590,
        2880,
    ]
    for bad in ("x", "1:2:3:4", 0, "-1:00"):
        with pytest.raises(ValueError):
            slurm_minutes(bad)
