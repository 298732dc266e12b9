"""The full preset starts from pretrained weights (given, or from the weights store) or refuses to
start; --from-scratch trains the landmark stream instead of keeping it frozen at random weights."""

from __future__ import annotations

import pytest
import torch
from helpers import make_prepared
from rich.console import Console
from test_weights import ir50_split_format, mobilefacenet_format
from typer.testing import CliRunner

from grefel.core.errors import GrefelError
from grefel.models.grefel import create_model
from grefel.training.config import TrainConfig
from grefel.training.loop import build_model, create_run_model, pretrained_files
from grefel.weights.store import MissingWeightsError
from grefel.weights.verify import add_weights
from grefel_cli.main import app


def _cfg(tmp_path, **kw):
    return TrainConfig(**{"dataset": "toy", "epochs": 1, "workers": 0, "quiet": True, "run_dir": str(tmp_path), **kw})


def test_full_preset_without_weights_refuses_in_one_line_before_any_work(tmp_path):
    make_prepared(n_per_class=4, num_classes=2, split={"train": 0.5, "val": 0.5})
    r = CliRunner().invoke(app, ["train", "--dataset", "toy", "--run-dir", str(tmp_path / "runs"), "--name", "x"])
    assert r.exit_code == 1, r.output
    line = r.output.strip()
    assert line.startswith("Error:") and "\n" not in line
    for part in ("ir50", "mobilefacenet", "grefel weights add", "--from-scratch", "https://"):
        assert part in line
    assert "from_scratch" not in line  # the CLI names its flag, the library its setting
    assert not (tmp_path / "runs").exists()
    with pytest.raises(MissingWeightsError, match="set from_scratch"):
        pretrained_files(_cfg(tmp_path))


def test_full_preset_loads_the_registered_weights_and_prints_a_line_per_file(tmp_path):
    torch.manual_seed(5)
    enc = create_model("full", 2).encoder.state_dict()
    torch.save(ir50_split_format(enc), tmp_path / "ir50.pth")
    torch.save({"state_dict": mobilefacenet_format(enc)}, tmp_path / "mobilefacenet_model_best.pth.tar")
    add_weights([tmp_path / "ir50.pth", tmp_path / "mobilefacenet_model_best.pth.tar"])

    cfg = _cfg(tmp_path)
    sources = pretrained_files(cfg)
    assert set(sources) == {"ir50", "mobilefacenet"} and all(p.is_file() for p in sources.values())
    console = Console(record=True, width=200)
    model, report = create_run_model(cfg, 2, None, sources, console)
    text = console.export_text()
    assert "pretrained ir50: " in text and "pretrained mobilefacenet: " in text and "keys matched" in text
    got = model.encoder.state_dict()
    for key in ("ir_back.input_layer.0.weight", "face_landback.conv1.conv.weight"):
        assert torch.equal(got[key], enc[key])
    assert all(not p.requires_grad for p in model.encoder.face_landback.parameters())  # pretrained: frozen


def test_from_scratch_trains_the_landmark_stream_and_takes_no_files(tmp_path):
    assert pretrained_files(_cfg(tmp_path, from_scratch=True)) == {}
    model = build_model(_cfg(tmp_path, from_scratch=True, preset="tiny"), 2)
    assert all(p.requires_grad for p in model.encoder.face_landback.parameters())
    # a model_args encoder override merges with it instead of replacing it
    model = build_model(_cfg(tmp_path, from_scratch=True, preset="tiny", model_args={"encoder": {"depth": 2}}), 2)
    assert model.model_kwargs["encoder"]["depth"] == 2 and not model.model_kwargs["encoder"]["freeze_landmarks"]
    with pytest.raises(GrefelError, match="from_scratch.*weight files were given"):
        pretrained_files(_cfg(tmp_path, from_scratch=True, ir50="ir50.pth"))
    r = CliRunner().invoke(app, ["train", "--from-scratch", "--ir50", "x.pth"])
    assert r.exit_code == 1 and "--from-scratch starts from random weights" in r.output


def test_library_messages_name_settings_and_the_command_names_flags():
    """grefel.training.loop says "set allow_partial" to Python callers; `grefel train` says "pass --allow-partial"."""
    from grefel_cli.train import _in_flags

    assert _in_flags("a.pth does not fit: or set allow_partial to load what matches") == (
        "a.pth does not fit: or pass --allow-partial to load what matches"
    )
    assert _in_flags("or set from_scratch to train") == "or pass --from-scratch to train"
    assert _in_flags("set nothing_declared here") == "set nothing_declared here"
