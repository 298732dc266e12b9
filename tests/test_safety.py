"""What every command guarantees (docs/contracts.md, "What every command guarantees"): one test or more
per rule, each written against a case that went wrong before the rule was enforced.

1. outputs never overwrite inputs; 2. names stay inside their folder; 3. a study reuses a run only
with its settings; 4. every file grefel reads is checked; 5. one bad item never costs the others;
6. explicit beats stored; 7. bounds where growth is unbounded; 9. the Python API's errors; 10. no
absolute checkpoint path in a study's predictions; 11. a folder or a FIFO named as a file. (8, Slurm,
is tests/test_slurm.py.)
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import make_prepared, one_line_error
from typer.testing import CliRunner

from grefel.core.errors import GrefelError
from grefel.data.shards import PreparedDataset
from grefel_cli.main import app


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def toy(tmp_path):
    """A 2-class prepared dataset named toy under the test's data root, with train and val."""
    return make_prepared(n_per_class=8, num_classes=2, n_groups=2, split={"train": 0.75, "val": 0.25}, image_size=32)


TRAIN = ["train", "--dataset", "toy", "--preset", "tiny", "--epochs", "1", "--per-class", "2", "--batch-size", "2"]
TRAIN += ["--workers", "0", "--crop", "28", "-q"]


# -- 2. names stay inside their folder ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE", "a/b", ".hidden"])
def test_a_run_name_that_leaves_the_run_folder_is_refused(tmp_path, toy, name):
    name = str(tmp_path / "abs-run") if name == "ABSOLUTE" else name
    r = _cli(*TRAIN, "--run-dir", tmp_path / "work" / "runs", "--name", name)
    one_line_error(r, "'name'", "not a plain name")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "abs-run").exists()
    assert not (tmp_path / "work").exists()


def test_label_and_split_set_names_are_plain_where_they_are_read(tmp_path, toy):
    ds = PreparedDataset(toy)
    for bad in ("../x", "/etc/passwd", ".."):
        with pytest.raises(GrefelError, match="not a plain name"):
            ds.labels(bad)
        with pytest.raises(GrefelError, match="not a plain name"):
            ds.splits(bad)
    one_line_error(_cli("corrupt", "--noise", "0.2", "--dataset", toy, "--name", "../../evil"), "not a plain name")
    assert not (toy.parent / "evil.h5").exists() and not (toy / "evil.h5").exists()
    one_line_error(_cli("inspect", toy, "--labels", "../x"), "not a plain name")
    one_line_error(_cli(*TRAIN, "--labels", "../../x", "--run-dir", tmp_path / "runs"), "'labels'", "plain name")


def _saved_study(tmp_path, text: str):
    """A study folder planned from the study file ``text`` (study.json written, nothing run)."""
    from grefel.study.folder import save_plan
    from grefel.study.run import open_study

    path = tmp_path / "s.toml"
    path.write_text(text)
    study, folder, text = open_study(path)
    folder.mkdir()
    save_plan(folder, study, text)
    return folder


def test_a_study_folder_whose_study_json_names_a_run_outside_it_is_refused(tmp_path, toy):
    from grefel.study.folder import STUDY_JSON

    folder = _saved_study(tmp_path, f'[study]\ndataset = "{toy}"\nseeds = 1\n[train]\npreset = "tiny"\nepochs = 1\n')
    plan = json.loads((folder / STUDY_JSON).read_text())
    plan["runs"][0]["name"] = "../../x"  # a copied folder, edited by hand or by someone else
    (folder / STUDY_JSON).write_text(json.dumps(plan))
    for cmd in (("study", "run", folder), ("study", "status", folder), ("study", "plan", folder)):
        one_line_error(_cli(*cmd), "run name '../../x' is not a plain name")
    assert not (tmp_path / "x").exists() and not (folder / "runs").exists()
    plan["runs"][0].update(name="s0", settings={**plan["runs"][0]["settings"], "labels": "../y"})
    (folder / STUDY_JSON).write_text(json.dumps(plan))
    one_line_error(_cli("study", "run", folder), "'labels'", "plain name")


def test_a_study_file_label_set_outside_the_dataset_is_refused_with_its_line(tmp_path, toy):
    path = tmp_path / "s.toml"
    path.write_text(f'[study]\ndataset = "{toy}"\n[grid]\nlabels = ["clean", "../x"]\n')
    one_line_error(_cli("study", "plan", path), "s.toml:4", "plain name")
    path.write_text(f'[study]\ndataset = "{toy}"\n[label_sets]\n"../x" = {{ noise = 0.2 }}\n')
    one_line_error(_cli("study", "plan", path), "s.toml:4", "plain name")


# -- 4. every file grefel reads is checked: label sets ---------------------------------------------------
def test_a_label_set_out_of_range_is_one_line_in_train_and_inspect(tmp_path, toy):
    from grefel.data.shards import write_label_set

    labels = PreparedDataset(toy).labels().copy()
    labels[3] = 99
    write_label_set(toy, "bad", labels)
    one_line_error(_cli(*TRAIN, "--labels", "bad", "--run-dir", tmp_path / "runs"), "label 99", "outside -1..1")
    one_line_error(_cli("inspect", toy, "--labels", "bad"), "label 99 (sample 3)", "outside -1..1")


def test_a_label_set_changed_after_it_was_written_is_refused(tmp_path, toy):
    import h5py

    from grefel.data.corrupt import corrupt

    corrupt(toy, 0.25, name="noisy")
    assert len(PreparedDataset(toy).labels("noisy")) == 16
    with h5py.File(toy / "labels" / "noisy.h5", "r+") as f:
        f["label"][:] = 0  # every label edited to the first class: in range, same length
    one_line_error(_cli(*TRAIN, "--labels", "noisy", "--run-dir", tmp_path / "runs"), "does not match the sha256")
    one_line_error(_cli("inspect", toy, "--labels", "noisy"), "does not match the sha256")
    (toy / "labels" / "noisy.sha256").unlink()
    one_line_error(_cli("inspect", toy, "--labels", "noisy"), "no readable checksum")
    assert not (tmp_path / "runs").exists()


# -- 1. outputs never overwrite inputs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from test_evaluate import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("safety-run"), label_set="clean")


@pytest.fixture
def face(tmp_path):
    from PIL import Image

    path = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path)
    return path


def _no_work(monkeypatch):
    """Make the work itself fail loudly: a check that passes only if it ran before any work."""
    from grefel.inference import predict as P

    def work(*a, **k):
        raise AssertionError("the work started before the outputs were checked")

    monkeypatch.setattr(P.Predictor, "run", work)


def test_predict_never_writes_over_its_inputs_and_checks_outputs_first(ckpt, face, tmp_path, monkeypatch):
    before = {p: p.read_bytes() for p in (ckpt, face)}
    _no_work(monkeypatch)
    base = ["predict", "--ckpt", ckpt, face, "--align", "none"]
    one_line_error(_cli(*base, "--csv", face), "CSV file", "is also an input")
    one_line_error(_cli(*base, "--parquet", ckpt), "Parquet file", "also an input")
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes())
    one_line_error(_cli(*base, "--json", other), "a PyTorch checkpoint")  # a checkpoint, even if not this one
    one_line_error(_cli(*base, "--json", tmp_path / "x.out", "--csv", tmp_path / "x.out"), "are one file")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for flag in ("--csv", "--json", "--parquet"):  # unwritable: found before any image is read
        one_line_error(_cli(*base, flag, blocker / "out"), "as the folder of the", "not a folder")
    annotated = tmp_path / "ann"
    annotated.mkdir()
    (annotated / "face.annotated.png").write_bytes(face.read_bytes())
    one_line_error(_cli(*base, annotated / "face.annotated.png", "--save-annotated", annotated), "over the input")
    assert {p: p.read_bytes() for p in (ckpt, face)} == before


def test_evaluate_export_and_evaluate_video_never_write_over_inputs(ckpt, tmp_path):
    before = ckpt.read_bytes()
    one_line_error(_cli("evaluate", "--ckpt", ckpt, "--out", ckpt), "also an input")
    manifest = ckpt.parents[1] / "toyraf" / "manifest.json"
    kept = manifest.read_bytes()
    one_line_error(_cli("evaluate", "--ckpt", ckpt, "--out", manifest), "inside the prepared dataset")
    assert manifest.read_bytes() == kept
    one_line_error(_cli("export", "--ckpt", ckpt, "--onnx", ckpt), "also an input")
    named = tmp_path / "model.onnx"  # a checkpoint named *.onnx: the default output is the checkpoint itself
    named.write_bytes(before)
    one_line_error(_cli("export", "--ckpt", named), "also an input")
    assert named.read_bytes() == before and ckpt.read_bytes() == before
    frames = tmp_path / "frames.csv"
    frames.write_text("file,frame,face,x1,x2,top_class\nv.mp4,0,0,1,2,neutral\n")
    ann = tmp_path / "v.txt"
    ann.write_text("Neutral,Anger\n0\n")
    one_line_error(_cli("evaluate-video", frames, ann, "--json", frames), "also an input")
    one_line_error(_cli("evaluate-video", frames, ann, "--json", ann), "also an input")
    assert frames.read_text().startswith("file,frame")


def test_prepare_never_clears_a_folder_that_holds_its_raw_input(tmp_path):
    import prepare_fixtures as fx

    out = tmp_path / "ferg"
    fx.make_ferg(tmp_path / "raw", per=1)
    r = _cli("prepare", "ferg", tmp_path / "raw", "--out", out, "--align", "none")
    assert r.exit_code == 0, r.output
    raw = out / "raw"  # the raw folder moved inside the prepared folder, then prepared again with --force
    (tmp_path / "raw").rename(raw)
    count = sum(1 for _ in raw.rglob("*.png"))
    one_line_error(_cli("prepare", "ferg", raw, "--out", out, "--align", "none", "--force"), "holds", "an input")
    one_line_error(_cli("prepare", "ferg", raw, "--out", raw, "--align", "none", "--force"), "is", "an input")
    assert sum(1 for _ in raw.rglob("*.png")) == count


def test_study_summary_never_writes_over_the_study_files(tmp_path, toy):
    from grefel.study.folder import STUDY_JSON

    folder = _saved_study(tmp_path, f'[study]\ndataset = "{toy}"\nseeds = 1\n')
    plan = (folder / STUDY_JSON).read_text()
    one_line_error(_cli("study", "summary", folder, "--json", folder / STUDY_JSON), "summary file", "also an input")
    assert (folder / STUDY_JSON).read_text() == plan


# -- 3. a study reuses a run only if its settings match -------------------------------------------------
STUDY = """
[study]
dataset = "{dataset}"
seeds = 1
[train]
preset = "tiny"
epochs = 1
per_class = 2
batch_size = 2
workers = 0
device = "cpu"
crop = 28
[grid]
setup = [{setups}]
"""


@pytest.fixture
def splits(tmp_path):
    """A 2-class prepared dataset with train, val and test splits."""
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    return make_prepared(tmp_path / "data" / "t", n_per_class=8, num_classes=2, split=split, image_size=32)


@pytest.mark.slow
def test_a_changed_setting_is_refused_naming_the_run_and_rerun_trains_it_again(tmp_path, splits):
    path = tmp_path / "s.toml"

    def study(setups: str):
        path.write_text(STUDY.format(dataset=splits, setups=setups))
        return _cli("study", "run", path, "--parallel", "1")

    assert study('{ name = "a" }, { name = "b" }').exit_code == 0
    r = study('{ name = "a" }')  # b leaves the plan; its folder stays
    assert r.exit_code == 0 and "1 runs, 1 done, 0 to run" in r.output, r.output
    b = tmp_path / "s" / "runs" / "b-s0"
    trained = (b / "best.pt").stat().st_mtime_ns
    r = study('{ name = "a" }, { name = "b", lr = 0.001 }')  # b comes back with another lr
    err = one_line_error(
        r, "run b-s0", "lr the method's recipe (default) -> 0.001", f"grefel study run {path} --rerun b-s0"
    )
    assert "trained with other settings" in err and (b / "best.pt").stat().st_mtime_ns == trained
    r = _cli("study", "run", path, "--rerun", "b-s0", "--parallel", "1")
    assert r.exit_code == 0 and "1 done, 1 to run" in r.output, r.output
    assert json.loads((b / "config.json").read_text())["config"]["lr"] == 0.001
    from grefel.evaluation.predictions import read_predictions

    meta = read_predictions(b / "predictions" / "best-test.parquet").meta
    assert str(tmp_path / "s") not in json.dumps(meta) and meta["checkpoint"] == "../best.pt"  # 10.
    one_line_error(_cli("study", "run", path, "--rerun", "c-s0"), "has no run named 'c-s0'")


# -- 7. bounds where growth is unbounded ----------------------------------------------------------------
@pytest.mark.parametrize(
    "body, words",
    [
        ("[study]\nseeds = 100000000\n", ("s.toml:2", "from 1 to 1000")),
        ("[study]\nseeds = [0, 123456789012345678901]\n", ("s.toml:2", "0 to 4,294,967,295")),
        ("[train]\nseed = 9999999999999\n", ("s.toml:2", "seed")),
        ("[grid]\nnum_anchors = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n[study]\nseeds = 1000\n", ("11,000 runs",)),
        ("[train]\nmodel_args = {encoder = {depht = 1}}\n", ("s.toml:2", "'depht'", "did you mean 'depth'")),
        ('[grid]\nsetup = [{ name = "x", model_args = { hed_hidden = [8] } }]\n', ("s.toml:2", "'hed_hidden'")),
    ],
)
def test_study_plan_states_its_bounds_and_checks_model_arguments(tmp_path, body, words):
    path = tmp_path / "s.toml"
    path.write_text(body)
    one_line_error(_cli("study", "plan", path), *words)


@pytest.mark.parametrize("seed", ["-1", "123456789012345678901"])
def test_a_seed_out_of_range_is_one_line_everywhere(tmp_path, toy, seed):
    one_line_error(_cli("corrupt", "--noise", "0.2", "--dataset", toy, "--seed", seed), "seed", "4,294,967,295")
    one_line_error(_cli("refine", "--dataset", toy, "--seed", seed), "seed")
    one_line_error(_cli("synth", tmp_path / "faces", "--seed", seed), "seed")
    r = _cli(*TRAIN, "--seed", seed, "--run-dir", tmp_path / "runs")  # train's options carry their ranges
    assert r.exit_code == 2 and "Invalid value for '--seed'" in r.output and "Traceback" not in r.output
    assert not (toy / "labels").exists() or not any((toy / "labels").iterdir())


# -- 4. every file grefel reads is checked: exported models, the weights store, manifests -------------------
@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    from grefel.inference.export import export_onnx

    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "m.onnx").path


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("classes", '["a", "b", "c"]', "names 3 classes for the model's 4 output columns"),
        ("classes", '["a", "b", "c", "d", "e"]', "names 5 classes"),
        ("classes", '["a", "a", "b", "c"]', "names a class twice"),
        ("classes", '"grefel"', "must be a list of class names"),
        ("image_size", "-128", "'image_size' must be at least 1"),
        ("crop", "0", "'crop' must be at least 1"),
        ("crop", "500", "crop 500 is larger than image_size 128"),
        ("crop", "100", "crop 100 differs from the model's 112 x 112 input"),
        ("mean", "[0.5]", "'mean' must be three values in [0, 1]"),
        ("std", "[0.2, 0.0, 0.2]", "'std' must be three finite values above 0"),
        ("std", '[0.2, "x", 0.2]', "'std' must be three"),
    ],
)
def test_onnx_metadata_is_checked_against_the_graph(exported, tmp_path, key, value, words):
    import onnx

    from grefel.core.errors import CheckpointError
    from grefel.inference.onnx_model import OnnxClassifier

    model = onnx.load(str(exported))
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(CheckpointError, match="metadata") as e:
        OnnxClassifier(bad)
    assert words in str(e.value) and "\n" not in str(e.value)
    one_line_error(_cli("predict", "--onnx", bad, exported, "--align", "none"), words)


def test_the_weights_store_compares_sha256_on_add_and_on_use(tmp_path, toy):
    import torch
    from test_weights import mobilefacenet_format

    from grefel.core.errors import CheckpointError
    from grefel.models.grefel import create_model
    from grefel.weights.store import read_registry, registered_file
    from grefel.weights.verify import add_weights

    torch.manual_seed(0)
    src = tmp_path / "mobilefacenet_model_best.pth.tar"
    torch.save({"state_dict": mobilefacenet_format(create_model("full", 7).encoder.state_dict())}, src)
    assert [r.status for r in add_weights([src])] == ["added"]
    stored = read_registry()["mobilefacenet"].path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, same size
    stored.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="changed since it was registered"):
        registered_file("mobilefacenet")
    one_line_error(_cli("train", "--dataset", "toy", "--preset", "full", "--run-dir", tmp_path / "r"), "another sha256")
    (res,) = add_weights([src])  # the original again: the damaged copy is replaced, not "unchanged"
    assert res.status == "replaced" and stored.read_bytes() == src.read_bytes(), res
    assert registered_file("mobilefacenet") == stored


def test_weights_add_says_what_a_folder_or_a_fifo_is(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    r = _cli("weights", "add", tmp_path, tmp_path / "pipe", tmp_path / "missing.pth")
    assert r.exit_code == 1 and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3, r.output
    assert "is a folder, not a file: give the files inside it" in errors[0]
    assert "is a FIFO (named pipe), not a regular file" in errors[1]
    assert "not found" in errors[2]


def test_a_manifest_holding_a_list_is_one_line(tmp_path, toy):
    (toy / "manifest.json").write_text("[]")
    one_line_error(_cli("inspect", toy), "not a manifest (a JSON list, not an object)")
    one_line_error(_cli(*TRAIN, "--run-dir", tmp_path / "runs"), "not a manifest")


# -- 4. evaluate-video: annotation files checked -------------------------------------------------------
def _frames_table(tmp_path, n=30, classes=("neutral", "anger")):
    import pandas as pd

    rows = [
        {"file": "/v/clip.mp4", "frame": k, "face": 0, "x1": 0, "x2": 10, "top_class": classes[k % 2]} for k in range(n)
    ]
    path = tmp_path / "frames.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_evaluate_video_checks_annotation_files(tmp_path):
    from grefel.evaluation.video import evaluate_video

    frames = _frames_table(tmp_path)
    ann = tmp_path / "clip.txt"
    good = "".join(f"{k % 2}\n" for k in range(30))
    ann.write_text("\ufeffNeutral,Anger\n" + good, encoding="utf-8")  # a byte-order mark before the header
    score = evaluate_video(frames, [ann])
    assert score.classes == ["neutral", "anger"] and score.frames == 30 and score.accuracy == 1.0
    assert evaluate_video(frames, [ann, ann, tmp_path]).frames == 30  # one video given thrice counts once
    ann.write_text("Neutral,Anger\n" + "".join(f"{k % 2}\n" for k in range(1000)))
    one_line_error(_cli("evaluate-video", frames, ann), "labels 1,000 frames", "cover about 30")
    ann.write_text("Neutral,Anger\n" + "-1\n" * 30)
    one_line_error(_cli("evaluate-video", frames, ann), "no labelled frame", "every one -1")
    ann.write_text("Neutral,Anger\n")
    one_line_error(_cli("evaluate-video", frames, ann), "no labelled frame (a header alone)")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "clip.txt").write_text("Neutral,Anger\n" + good)
    ann.write_text("Neutral,Anger\n" + good)
    one_line_error(_cli("evaluate-video", frames, ann, other / "clip.txt"), "two annotation files for video clip")


# -- 6. explicit beats stored; 10. no absolute checkpoint path in a predictions file -----------------------
def test_evaluate_data_root_beats_the_recorded_path_and_the_checkpoint_path_is_relative(ckpt, tmp_path):
    import shutil

    from grefel.evaluation.predictions import read_predictions

    elsewhere = tmp_path / "root"
    shutil.copytree(ckpt.parents[1] / "toyraf", elsewhere / "toyraf")
    out = tmp_path / "preds" / "p.parquet"
    r = _cli("evaluate", "--ckpt", ckpt, "--data-root", elsewhere, "--out", out, "--batch-size", "16")
    assert r.exit_code == 0, r.output
    meta = read_predictions(out).meta
    assert meta["dataset"]["path"] == str((elsewhere / "toyraf").resolve())  # not the path the checkpoint records
    assert meta["checkpoint"] == os.path.relpath(ckpt, out.parent) and not os.path.isabs(meta["checkpoint"])
    one_line_error(
        _cli("evaluate", "--ckpt", ckpt, "--data-root", tmp_path / "empty", "--out", out, "--force"),
        "no prepared dataset 'toyraf' under",
    )


# -- 9. the Python API's errors are as clear as the CLI's; 5. one bad item never costs the others ---------
def test_the_python_api_says_what_to_pass_with_the_clis_ranges(ckpt, face):
    import grefel

    model = grefel.load(ckpt, align="none")
    for bad, words in (
        (5, "a path or a list of paths"),
        (None, "a path or a list of paths"),
        ([face, 3], "a list holding other things"),
        (np.zeros((2, 64, 64, 3), np.uint8), "use predict_faces(faces)"),
    ):
        with pytest.raises(GrefelError, match=None) as e:
            model.predict(bad)
        assert words in str(e.value) and "\n" not in str(e.value)
    for kw, words in (
        ({"fps": -1}, "fps must be a number of frames per second above 0"),
        ({"fps": 0}, "fps must be"),
        ({"fps": float("nan")}, "fps must be"),
        ({"smooth": 0}, "smooth must be a whole number of at least 1"),
        ({"max_faces": 0}, "max_faces must be"),
        ({"batch_size": 0}, "batch_size must be"),
    ):
        with pytest.raises(GrefelError) as e:
            model.predict(face, **kw)
        assert words in str(e.value)
    assert model.predict(face)["top_class"].notna().all()  # the same call with the defaults works


def test_a_fifo_among_the_inputs_is_one_error_row_and_the_rest_go_on(ckpt, face, tmp_path):
    import grefel

    os.mkfifo(tmp_path / "pipe.png")
    df = grefel.load(ckpt, align="none").predict([tmp_path / "pipe.png", face])
    by = dict(zip(df["file"].map(os.path.basename), df["error"]))
    assert "is a FIFO (named pipe)" in by["pipe.png"] and not isinstance(by["face.png"], str)
