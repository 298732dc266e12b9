"""`grefel train --method ce|eac|scn|rul`: the baselines in grefel's harness (run folder, recipe, checkpoints,
resume with SCN's relabelled labels, evaluation, predict, report) and their one-line refusals."""

import json
import pickle

import numpy as np
import pytest
import torch
import torchvision
from helpers import make_prepared

import grefel
from grefel.core.errors import CheckpointError, DatasetError, GrefelError
from grefel.data.transforms import augment_uniforms, train_batch
from grefel.evaluation.evaluate import evaluate
from grefel.evaluation.predictions import read_predictions
from grefel.training.checkpoint import load_checkpoint
from grefel.training.config import TrainConfig
from grefel.training.loop import train
from grefel.training.methods import EACStep, StepBatch

BASELINES = ("ce", "eac", "scn", "rul")
PARTS = {"ce": ("ce",), "eac": ("ce", "consistency"), "scn": ("ce", "rank", "relabelled"), "rul": ("ce",)}


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cfg(tmp_path, **kw):
    make_prepared(n_per_class=8, num_classes=2, split={"train": 0.5, "val": 0.25, "test": 0.25})
    base = dict(dataset="toy", preset="tiny", epochs=2, batch_size=4, workers=0, quiet=True, log_every=1)
    return TrainConfig(**{**base, "run_dir": str(tmp_path / "runs"), **kw})


@pytest.mark.parametrize("method", BASELINES)
def test_a_baseline_trains_with_its_recipe_and_evaluates(tmp_path, method):
    run = train(_cfg(tmp_path, method=method, name=method))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for part in PARTS[method]:
        assert np.isfinite(rows[-1][f"train_{part}"])
    assert "train_anchor" not in rows[0] and rows[0]["epoch_images"] == 8  # refinement off: a pass over train
    config = json.loads((run / "config.json").read_text())["config"]
    recipe = {"scn": 1e-3, "eac": 2e-4, "rul": 2e-4, "ce": 2e-4}[method]
    assert (config["method"], config["lr"], config["gamma"], config["refine"]) == (method, recipe, 0.9, False)
    assert (config["rotation"], config["color"], config["weight_decay"]) == (0.0, 0.0, 1e-4)
    ck = load_checkpoint(run / "best.pt")
    assert ck["model_config"]["method"] == method and ck["model_kwargs"]["backbone"] == "tiny"
    out = evaluate(run / "best.pt", show_progress=False)
    pred = read_predictions(out)
    assert len(pred.table) == 4
    np.testing.assert_array_equal(pred.arrays["primary"], pred.arrays["corrected"])  # one distribution
    np.testing.assert_allclose(pred.arrays["corrected"].sum(1), 1, atol=1e-5)
    assert (pred.table["pred_primary"] == pred.table["pred_corrected"]).all()
    faces = np.stack([np.full((128, 128, 3), 60 * i, np.uint8) for i in range(3)])
    frame = grefel.load(run / "best.pt", align="none").predict_faces(faces)  # what `grefel predict` runs
    probs = frame[[c for c in frame.columns if c.startswith("p_")]].to_numpy(float)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_rul_classifier_learns_at_ten_times_the_rate(tmp_path):
    run = train(_cfg(tmp_path, method="rul", epochs=1, lr=1e-3))
    groups = load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.9, 1e-2 * 0.9])  # one decay step
    assert len(groups[1]["params"]) == 2  # fc weight and bias


def test_scn_resume_equals_an_unbroken_run_relabelled_labels_included(tmp_path):
    """SCN relabels from epoch 1 here (margin 0: every sample the model disagrees with); a run stopped
    after epoch 1 and resumed must carry the rewritten labels on and end where the unbroken run ends."""
    kw = dict(method="scn", epochs=3, scn_relabel_epoch=1, scn_relabel_margin=0.0, lr=1e-2)
    unbroken = train(_cfg(tmp_path, name="one", **kw))
    first = train(_cfg(tmp_path, name="two", stop_after=1, **kw))
    mid = load_checkpoint(first / "last.pt")["method_state"]["scn_labels"]
    resumed = train(TrainConfig(resume=str(first), quiet=True, workers=0))
    a, b = load_checkpoint(unbroken / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert (mid != torch.tensor(_clean_labels())).any()  # labels were rewritten before the stop
    assert torch.equal(a["method_state"]["scn_labels"], b["method_state"]["scn_labels"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def _clean_labels():
    from grefel.core.paths import resolve_dataset
    from grefel.data.shards import PreparedDataset

    return PreparedDataset(resolve_dataset("toy")).labels()


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path):
    run = train(_cfg(tmp_path, method="eac", epochs=1, name="e"))
    with pytest.raises(CheckpointError, match="checkpoint of method eac, not scn"):
        train(TrainConfig(resume=str(run), method="scn", quiet=True))
    with pytest.raises(CheckpointError, match="checkpoint of method eac, not grefel"):
        train(TrainConfig(resume=str(run), method="grefel", quiet=True))


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(GrefelError, match="'method' must be one of grefel, ce, eac, scn, rul"):
        train(_cfg(tmp_path, method="dac"))
    with pytest.raises(GrefelError, match="label_smoothing is a GReFEL setting and method eac does not use it"):
        train(_cfg(tmp_path, method="eac", label_smoothing=0.0))
    with pytest.raises(GrefelError, match="scn_beta is a setting of method scn"):
        train(_cfg(tmp_path, method="rul", scn_beta=0.5))
    with pytest.raises(GrefelError, match="method rul has no preset 'big'"):
        train(_cfg(tmp_path, method="rul", preset="big"))
    with pytest.raises(GrefelError, match="high-importance group"):
        train(_cfg(tmp_path, method="scn", scn_beta=0.4, batch_size=2))
    make_prepared(name="one", n_per_class=[6, 0], num_classes=2, split={"train": 0.5, "val": 0.5})
    with pytest.raises(DatasetError, match="training split holds labelled images of 1 class"):
        train(_cfg(tmp_path, method="ce", dataset="one"))
    assert not (tmp_path / "runs").exists()  # no run folder left behind


def test_paper_backbones_need_their_weight_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"starts from pretrained resnet18-dream weights.*ijba_res18_naive"):
        train(_cfg(tmp_path, method="scn", preset="full"))
    with pytest.raises(CheckpointError, match=r"resnet50-vggface2 weights.*resnet50_ft_weight.pkl.*from_scratch"):
        train(_cfg(tmp_path, method="eac", preset="resnet50"))
    r50 = {k: v.numpy() for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}
    (tmp_path / "r50.pkl").write_bytes(pickle.dumps(r50, protocol=2))
    with pytest.raises(CheckpointError, match="for the resnet50_caffe backbone, but this model's backbone is resnet18"):
        train(_cfg(tmp_path, method="eac", preset="full", backbone_weights=str(tmp_path / "r50.pkl")))
    with pytest.raises(GrefelError, match="drop one or the other"):
        train(_cfg(tmp_path, method="eac", from_scratch=True, backbone_weights=str(tmp_path / "r50.pkl")))


def test_full_baseline_starts_from_a_registered_resnet18(tmp_path, capsys):
    from grefel.weights.verify import add_weights

    sd = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({"state_dict": sd}, tmp_path / "resnet18_msceleb.pth")
    assert add_weights([tmp_path / "resnet18_msceleb.pth"])[0].ok
    cfg = _cfg(tmp_path, method="rul", preset="full", epochs=1, batch_size=2, name="r18", quiet=False)
    run = train(cfg)
    assert "resnet18: resnet18_msceleb.pth" in (run / "pretrained.txt").read_text() + capsys.readouterr().err
    got = load_checkpoint(run / "last.pt")["model"]
    assert got["backbone.conv1.weight"].shape == (64, 3, 7, 7)


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 2)

    def forward(self, x, x2):
        self.views = (x, x2)
        n = len(x)
        return self.fc.weight.sum() * torch.zeros(n, 2), torch.zeros(n, 2, 3, 3), torch.zeros(n, 2, 3, 3)


def test_eac_second_view_mirrors_the_first_with_its_own_erasing():
    """The flipped view has the first view's crop, rotation and colour, mirrored; only its erasing differs."""
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
    u = augment_uniforms(4, seed=3, epoch=0)

    def run(erase):
        from grefel.data.transforms import TrainAugment

        aug = TrainAugment(crop=28, erase=erase)
        step = EACStep(TrainConfig(method="eac", eac_lambda=5.0, seed=3))
        step.begin_epoch(0, 4, torch.device("cpu"))
        view = lambda rows: train_batch(images, rows, aug)  # noqa: E731
        b = StepBatch(view(u), torch.zeros(4, dtype=torch.long), torch.arange(4), u, view, 0.0, torch.no_grad)
        b.pos = torch.arange(4)
        model = _Recorder()
        step.losses(model, None, b)
        return model.views

    x, x2 = run(erase=0.0)
    torch.testing.assert_close(x2, x.flip(-1))  # no erasing: the exact mirror
    x, x2 = run(erase=1.0)
    same = (x2 == x.flip(-1)).all(1)  # pixels outside both erased rectangles agree
    assert 0.3 < same.float().mean() < 1.0


@pytest.mark.slow
def test_scn_relabelling_under_torchrun_matches_one_process(tmp_path):
    """Two gloo processes (torchrun) relabel exactly as one process: every rank applies every rank's
    changes. lr 1e-9 keeps the weights at their start (see test_train_ddp.py), BatchNorm frozen, so both
    runs see the same logits; margin 0 relabels every image the model disagrees with, from epoch 1."""
    import os
    import subprocess
    import sys

    make_prepared(n_per_class=8, num_classes=2, split={"train": 0.5, "val": 0.25, "test": 0.25})
    kw = dict(method="scn", preset="tiny", epochs=2, batch_size=8, freeze_bn=True, lr=1e-9, workers=0)
    kw.update(scn_relabel_epoch=1, scn_relabel_margin=0.0, device="cpu", quiet=True, dataset="toy")
    argv = ["train", "--run-dir", str(tmp_path), "--name", "ddp"]
    argv += [a for k, v in kw.items() for a in _flag(k, v)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*cmd, "-m", "grefel_cli.main", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")["method_state"]["scn_labels"]
    one = load_checkpoint(train(TrainConfig(run_dir=str(tmp_path), name="one", **kw)) / "last.pt")
    assert (ddp != torch.tensor(_clean_labels())).any()  # relabelling happened
    assert torch.equal(ddp, one["method_state"]["scn_labels"])


def _flag(key, value):
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    return [flag, str(value)]
