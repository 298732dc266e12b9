"""`grefel model-info`: the table of parameters (trainable / frozen) and FLOPs per module group."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from grefel_cli.main import app


def test_model_info_tiny_json():
    r = CliRunner().invoke(app, ["model-info", "--preset", "tiny", "--num-classes", "4", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    groups = {g["name"]: g for g in data["groups"]}
    lm = groups["landmark stream (MobileFaceNet)"]
    assert lm["trainable"] > 0 and lm["frozen"] == 0  # tiny trains from scratch: its landmark stream learns
    assert all(g["frozen"] == 0 for g in groups.values())
    from grefel.models.grefel import create_model

    dim = create_model("tiny", 4).encoder.embed_dim
    assert groups["anchors (eq. 12-15)"]["trainable"] == 4 * 10 * dim  # C x K x D
    assert data["total"]["trainable"] == sum(g["trainable"] for g in data["groups"])
    assert data["total"]["flops"] > data["encoder"]["flops"] > 0


def test_model_info_table_and_ablation():
    r = CliRunner().invoke(app, ["model-info", "--preset", "tiny", "--reliability", "none"])
    assert r.exit_code == 0, r.output
    assert "image stream" in r.output and "GFLOPs" in r.output and "reliability none" in r.output
    r = CliRunner().invoke(app, ["model-info", "--preset", "huge"])
    assert r.exit_code == 1 and "unknown model preset" in r.output
