"""The noisy-label baselines' backbone files: generated in each published layout (key lists in
tests/data/state_dicts/), identified by their keys, registered, loaded into the right backbone, refused
for the wrong one, and read safely (a pickle that would run code is refused)."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from grefel.core.errors import CheckpointError
from grefel.models.factory import create_method_model
from grefel.weights.backbones import load_backbone, plan_backbone
from grefel.weights.store import MissingWeightsError, read_registry
from grefel.weights.verify import add_weights, check_weight_file, read_state_dict

REFERENCE = Path(__file__).parent / "data" / "state_dicts"
SMALL_CLASSIFIER = 10  # rows of the pretraining classifier in generated files (87020 / 8631 in the real ones)


def reference(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for line in (REFERENCE / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            out[key] = (tuple(ast.literal_eval(shape)), dtype)
    return out


def generated(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays with exactly the key list's names, shapes and dtypes (the classifier's rows cut down)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, (shape, dtype) in reference(name).items():
        if key.split(".")[-2:-1] == ["fc"] and len(shape) and shape[0] > 1000:
            shape = (SMALL_CLASSIFIER, *shape[1:])
        if dtype == "int64":
            out[key] = np.zeros(shape, np.int64)
        elif key.endswith(("conv1.weight", "bn1.weight")) and key.count(".") <= 2:
            out[key] = rng.standard_normal(shape).astype(np.float32)  # values the load must carry over
        else:
            out[key] = np.zeros(shape, np.float32)
    return out


def _torch(arrays):
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("backbones")
    torch.save({"state_dict": _torch(generated("resnet18_msceleb.tsv"))}, d / "resnet18_msceleb.pth")
    torch.save({"state_dict": _torch(generated("ijba_res18_naive.tsv", 1))}, d / "ijba_res18_naive.pth.tar")
    (d / "resnet50_ft_weight.pkl").write_bytes(pickle.dumps(generated("resnet50_ft_weight_pkl.tsv", 2), protocol=2))
    return d


def test_generated_files_have_the_published_layouts(files):
    for file, ref in [
        ("resnet18_msceleb.pth", "resnet18_msceleb.tsv"),
        ("ijba_res18_naive.pth.tar", "ijba_res18_naive.tsv"),
        ("resnet50_ft_weight.pkl", "resnet50_ft_weight_pkl.tsv"),
    ]:
        sd, _ = read_state_dict(files / file)
        want = {k.removeprefix("module."): s for k, (s, _) in reference(ref).items()}
        assert set(sd) == set(want), file  # 'module.' dropped, every key there
        for k, t in sd.items():
            cut = k.startswith("fc.") and want[k][0] > 1000
            assert tuple(t.shape) == ((SMALL_CLASSIFIER, *want[k][1:]) if cut else want[k]), k


def test_identified_registered_and_loaded(files):
    kinds = {}
    for f in ("resnet18_msceleb.pth", "ijba_res18_naive.pth.tar", "resnet50_ft_weight.pkl"):
        rep = check_weight_file(files / f)
        kinds[f] = (rep.kind, rep.coverage, len(rep.unused))
    assert kinds == {
        "resnet18_msceleb.pth": ("resnet18", "120/120", 2),  # fc.weight, fc.bias unused
        "ijba_res18_naive.pth.tar": ("resnet18-dream", "100/100", 4),  # + DREAM's feature layer
        "resnet50_ft_weight.pkl": ("resnet50-vggface2", "265/265", 2),
    }
    results = add_weights([files / f for f in kinds])
    assert all(r.ok for r in results), [r.message for r in results]
    assert set(read_registry()) == {"resnet18", "resnet18-dream", "resnet50-vggface2"}
    assert plan_backbone("scn", "full").name == "ijba_res18_naive.pth.tar"  # SCN's paper's file first
    assert plan_backbone("rul", "full").name == "resnet18_msceleb.pth"
    assert plan_backbone("eac", "resnet50").name == "resnet50_ft_weight.pkl"
    assert plan_backbone("eac", "tiny") is None
    model = create_method_model("rul", "full", 7)
    load_backbone(model, plan_backbone("rul", "full"))
    want = generated("resnet18_msceleb.tsv")["conv1.weight"]
    np.testing.assert_array_equal(model.backbone.conv1.weight.detach().numpy(), want)
    model = create_method_model("eac", "resnet50", 7)
    rep = load_backbone(model, files / "resnet50_ft_weight.pkl").sources[0]
    assert rep.loaded and rep.kind == "resnet50-vggface2"
    want = generated("resnet50_ft_weight_pkl.tsv", 2)["bn1.weight"]
    np.testing.assert_array_equal(model.backbone.bn1.weight.detach().numpy(), want)


def test_wrong_backbone_and_missing_files_are_one_line(files, tmp_path):
    with pytest.raises(CheckpointError, match="is a ResNet-50 .* but this model's backbone is resnet18"):
        load_backbone(create_method_model("scn", "full", 7), files / "resnet50_ft_weight.pkl")
    with pytest.raises(CheckpointError, match="for the resnet18 backbone, but this model's backbone is resnet50_caffe"):
        load_backbone(create_method_model("eac", "resnet50", 7), files / "resnet18_msceleb.pth")
    torch.save({"encoder.x": torch.zeros(1)}, tmp_path / "run.pt")
    with pytest.raises(CheckpointError, match="run.pt is no known backbone file, not a backbone for method ce"):
        load_backbone(create_method_model("ce", "full", 7), tmp_path / "run.pt")
    cut = {k: v for k, v in _torch(generated("resnet18_msceleb.tsv")).items() if not k.startswith("layer3.1")}
    torch.save(cut, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="does not fit the resnet18 backbone: .* backbone keys missing"):
        load_backbone(create_method_model("ce", "full", 7), tmp_path / "cut.pth")
    assert load_backbone(create_method_model("ce", "full", 7), tmp_path / "cut.pth", allow_partial=True)
    with pytest.raises(MissingWeightsError, match=r"resnet18_msceleb.pth .* RUL's README.*grefel weights add"):
        plan_backbone("rul", "full")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"conv1.weight": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        read_state_dict(tmp_path / "evil.pkl")
