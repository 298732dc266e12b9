"""Each training setting is declared once (TrainConfig): the CLI options, their defaults, ranges and
choices, the argument list of a dict of settings and its validation all come from that declaration."""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from grefel.core.errors import GrefelError
from grefel.training.config import TrainConfig, train_argv, validate_settings
from grefel.training.loop import MetricLogger
from grefel_cli.main import app


def _train_command():
    import typer.main

    return typer.main.get_command(app).commands["train"]


def _options():
    return {p.name: p for p in _train_command().params if p.name != "ctx"}


def _parsed(argv, monkeypatch) -> TrainConfig:
    """The TrainConfig `grefel train ARGV` hands to the library (training itself is replaced)."""
    import grefel.training.loop

    seen = []
    monkeypatch.setattr(grefel.training.loop, "train", seen.append)
    r = CliRunner().invoke(app, ["train", *argv])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return seen[0]


def test_every_field_is_an_option_with_the_declared_default():
    opts = _options()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(opts) == set(fields)
    for name, f in fields.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if name == "model_args":
            assert opts[name].opts == ["--model-arg"] and opts[name].multiple
            continue
        assert opts[name].default == default, name
        assert f"--{name.replace('_', '-')}" in opts[name].opts, name
        if isinstance(default, bool):
            assert f"--no-{name.replace('_', '-')}" in opts[name].secondary_opts, name


def test_existing_flags_and_short_flags_are_kept():
    opts = _options()
    short = {n: [o for o in p.opts if not o.startswith("--")] for n, p in opts.items()}
    assert short["dataset"] == ["-d"] and short["num_anchors"] == ["-K"] and short["batch_size"] == ["-b"]
    assert short["workers"] == ["-j"] and short["quiet"] == ["-q"]
    for name in ("augment", "refine", "sync_bn"):
        flag = name.replace("_", "-")
        assert opts[name].opts == [f"--{flag}"] and opts[name].secondary_opts == [f"--no-{flag}"]


def test_defaults_and_choices_have_one_source():
    """N_pg / B are refine.py's constants, the reliability setups the model's own tuple."""
    from grefel.core.recipe import RELIABILITY
    from grefel.core.settings import specs
    from grefel.data.refine import N_PG, PER_CLASS
    from grefel.models.grefel import GReFEL

    cfg = TrainConfig()
    assert (cfg.n_pg, cfg.per_class) == (N_PG, PER_CLASS)
    opts = _options()
    assert opts["n_pg"].default == N_PG and opts["per_class"].default == PER_CLASS
    assert specs(TrainConfig)["reliability"][1].choices is RELIABILITY  # the model's tuple, not a copy
    with pytest.raises(GrefelError, match="'reliability' must be one of " + ", ".join(RELIABILITY)):
        validate_settings({"reliability": "x"})
    with pytest.raises(GrefelError, match="unknown reliability"):
        GReFEL(2, reliability="x")


def test_paper_defaults():
    """Section 4.1 and the supplement (docs/training.md lists each default's source); the settings each
    method's recipe sets are unset (None) until the run resolves them (grefel's row: the paper)."""
    from grefel.training.config import with_recipe

    assert TrainConfig().lr is None and TrainConfig().refine is None
    cfg = with_recipe(TrainConfig())
    assert (cfg.method, cfg.batch_size, cfg.epochs, cfg.refine) == ("grefel", 128, 1000, True)
    assert (cfg.flip, cfg.rotation, cfg.color) == (0.5, 10.0, 0.2)
    assert (cfg.lr, cfg.gamma, cfg.weight_decay, cfg.dropout, cfg.num_anchors) == (3e-4, 0.995, 0.0, 0.5, 10)
    assert (cfg.lambda_cls, cfg.lambda_anchor, cfg.lambda_center) == (1.0, 1.0, 1.0)
    assert cfg.label_smoothing == 0.11  # Table 8: T = 11, the row of Table 1's Aff-Wild2 figure
    assert (cfg.aux_warmup, cfg.correction_warmup, cfg.reliability, cfg.preset) == (0.0, 0.0, "both", "full")


def test_demo_keeps_its_measured_settings():
    from grefel.demo import DemoSettings, train_settings

    s = DemoSettings(characters=2, per_class=4, imbalance=1.0, epochs=1, refine_per_class=4)
    cfg = TrainConfig(**train_settings(s))
    assert (cfg.label_smoothing, cfg.lr, cfg.augment, cfg.from_scratch) == (0.11, None, True, False)  # the paper's
    assert (cfg.lambda_center, cfg.correction_warmup, cfg.aux_warmup, cfg.n_pg) == (0.1, 1.0, 0.0, None)


def test_train_argv_round_trips_through_the_cli(monkeypatch, tmp_path):
    settings = {
        "dataset": "rafdb",
        "refine": False,
        "n_pg": None,  # no cap
        "augment": False,
        "sync_bn": True,
        "quiet": True,
        "flip": 0.25,
        "lr": 1.5e-05,
        "num_anchors": 4,
        "reliability": "anchors",
        "label_smoothing": 0.0,
        "model_args": {"encoder": {"depth": 1}, "attn_heads": 2},
        "ir50": str(tmp_path / "ir50.pth"),
        "epochs": 3,
    }
    argv = train_argv(settings)
    assert argv[:2] == ["--dataset", "rafdb"] and "--no-refine" in argv and "--no-augment" in argv
    assert argv[argv.index("--n-pg") + 1] == "0"
    got = _parsed(argv, monkeypatch)
    want = TrainConfig(**{**settings, "n_pg": 0})  # the command line spells "no cap" as 0
    assert got == want
    assert _parsed([], monkeypatch) == TrainConfig()  # no arguments: every default


def test_validate_settings_names_the_key():
    validate_settings({"lr": 1e-3, "epochs": 5, "augment": False, "model_args": {}, "n_pg": None})
    cases = {
        "lrr": "unknown training setting 'lrr' \\(did you mean 'lr'\\?\\)",
        "batch_size": "training setting 'batch_size' must be >= 2 \\(got 1\\)",
        "dropout": "training setting 'dropout' must be in \\[0, 1\\) \\(got 1.5\\)",
        "augment": "training setting 'augment' must be true or false \\(got 'no'\\)",
        "epochs": "training setting 'epochs' must be an integer \\(got 2.5\\)",
        "precision": "training setting 'precision' must be one of auto, bf16, fp16, fp32",
        "device": "training setting 'device' has an unknown value 'gpu'",
        "lr": "training setting 'lr' must be > 0",
    }
    bad = {"lrr": 1, "batch_size": 1, "dropout": 1.5, "augment": "no", "epochs": 2.5, "precision": "fp8"}
    bad.update(device="gpu", lr=0.0)
    for key, pattern in cases.items():
        with pytest.raises(GrefelError, match=pattern):
            validate_settings({key: bad[key]})
    with pytest.raises(GrefelError, match="'batch_size'"):
        train_argv({"batch_size": 0})


def test_metric_logger_sums_over_steps_and_keeps_each_window():
    m = MetricLogger(("loss", "acc"), torch.device("cpu"))
    m.update(2, loss=torch.tensor(1.0), acc=torch.tensor(0.5))
    m.update(6, loss=torch.tensor(3.0), acc=torch.tensor(1.0))
    assert m.sync() == {"loss": 2.5, "acc": 0.875}  # per-sample averages of the window
    m.update(8, loss=torch.tensor(float("nan")), acc=torch.tensor(0.0))
    window = m.sync()
    assert window["loss"] != window["loss"] and window["acc"] == 0.0  # NaN reported, not hidden
    assert m.count == 16
