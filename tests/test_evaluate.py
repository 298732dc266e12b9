"""`grefel evaluate`: every model output per sample, resumable, and clear refusals of wrong inputs.

``make_checkpoint`` (also used by the predict and report tests) writes a small prepared dataset with
RAF-DB-style attributes and a noisy label set, and a checkpoint of the ``tiny`` model that records
it exactly as `grefel train` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import PATTERNS, pattern_image
from typer.testing import CliRunner

import grefel.evaluation.evaluate as E
from grefel.core.errors import CheckpointError, DatasetError, GrefelError
from grefel.core.io import write_json
from grefel.data.shards import PreparedDataset, Sample, shard_name, write_shard
from grefel.evaluation.predictions import read_predictions
from grefel.training.checkpoint import save_checkpoint

torch.set_num_threads(2)
CLASSES = ["hstripes", "vstripes", "disc", "checker"]
GENDER = {"0": "male", "1": "female", "2": "unsure"}


def make_dataset(root: Path, n_per_class: int = 6, classes=CLASSES, protocol: str = "basic", seed: int = 0) -> Path:
    """Prepared dataset: half train / half test per class, two shards, a gender attribute, label set ``noisy``."""
    rng = np.random.default_rng(seed)
    samples = []
    for k, _ in enumerate(classes):
        for i in range(n_per_class):
            samples.append(
                Sample(
                    image=pattern_image(PATTERNS[k], rng, 128),
                    label=k,
                    split="test" if i % 2 else "train",
                    source=f"{classes[k]}/{i}.png",
                    group=f"s{i % 3}",
                    attributes={"gender": int(i % 4) - 1},
                )
            )
    shards = []
    for s, start in enumerate(range(0, len(samples), 16)):
        shards.append(
            write_shard(
                root / "shards" / shard_name(s),
                samples[start : start + 16],
                first_index=start,
                dataset="toyraf",
                protocol=protocol,
                classes=classes,
                image_size=128,
                attribute_names=["gender"],
            )
        )
    write_json(
        root / "manifest.json",
        {
            "schema_version": 2,
            "dataset": "toyraf",
            "protocol": protocol,
            "classes": list(classes),
            "image_size": 128,
            "shards": shards,
            "attributes": {"gender": GENDER},
        },
    )
    noisy = np.array([s.label for s in samples], np.int16)
    noisy[::5] = (noisy[::5] + 1) % len(classes)
    (root / "labels").mkdir()
    with h5py.File(root / "labels" / "noisy.h5", "w") as f:
        f.create_dataset("label", data=noisy)
        f.attrs["noise"] = 0.2
        f.attrs["mode"] = "symmetric"
    return root


def make_checkpoint(
    tmp_path: Path,
    *,
    num_anchors: int = 2,
    label_set: str = "noisy",
    label_smoothing: float = 0.0,
    name: str = "run",
    dataset_root: Path | None = None,
    record: dict | None = None,
    seed: int = 0,
) -> Path:
    """A `grefel train`-style checkpoint of the tiny model for the dataset of :func:`make_dataset`."""
    from grefel.models.grefel import create_model

    root = dataset_root or (
        tmp_path / "toyraf" if (tmp_path / "toyraf" / "manifest.json").is_file() else make_dataset(tmp_path / "toyraf")
    )
    ds = PreparedDataset(root)
    torch.manual_seed(seed)
    model = create_model("tiny", num_classes=ds.num_classes, num_anchors=num_anchors)
    dataset = {
        "name": ds.name,
        "protocol": ds.protocol,
        "classes": ds.classes,
        "manifest_sha256": ds.manifest_sha256,
        "path": str(root.resolve()),
    }
    dataset.update(record or {})
    payload = {
        "model": model.state_dict(),
        "model_config": model.model_config,
        "model_kwargs": model.model_kwargs,
        "dataset": dataset,
        "label_set": label_set,
        "split_set": "official",
        "config": {"num_anchors": num_anchors, "label_smoothing": label_smoothing, "labels": label_set},
        "epoch": 2,
        "metrics": {},
    }
    return save_checkpoint(tmp_path / name / "best.pt", payload)


def test_evaluate_writes_every_output(tmp_path):
    ckpt = make_checkpoint(tmp_path)
    path = E.evaluate(ckpt, batch_size=5, show_progress=False)
    assert path == ckpt.parent / "predictions" / "best-test-noisy.parquet"
    pred = read_predictions(path)
    t = pred.table
    ds = PreparedDataset(tmp_path / "toyraf")
    test_idx = ds.indices("test")
    assert t["index"].tolist() == test_idx.tolist() and (t["split"] == "test").all()
    assert t["label"].tolist() == ds.labels()[test_idx].tolist()
    assert t["label_noisy"].tolist() == ds.labels("noisy")[test_idx].tolist()
    assert t["gender"].tolist() == ds.meta["gender"].to_numpy()[test_idx].tolist()
    assert pred.meta["attribute_codes"] == {"gender": GENDER}
    assert pred.meta["label_set_info"]["noise"] == pytest.approx(0.2)
    assert pred.meta["model"] == {"num_anchors": 2, "reliability": "both"}
    assert pred.meta["crop"] == 112 and pred.meta["precision"] == "fp32"
    assert pred.classes == CLASSES
    for k in ("primary", "geometric", "attentive", "correction", "corrected"):
        assert pred.arrays[k].shape == (len(test_idx), 4)
        np.testing.assert_allclose(pred.arrays[k].sum(1), 1, atol=1e-4)
    assert (t["pred_corrected"].to_numpy() == pred.arrays["corrected"].argmax(1)).all()
    assert (t["pred_primary"].to_numpy() == pred.arrays["primary"].argmax(1)).all()

    # the same numbers as running the model directly on the stored faces
    model = E.model_from_checkpoint(torch.load(ckpt, weights_only=True))
    with torch.inference_mode():
        out = model(E.eval_batch(ds.read_images(test_idx[:4])))
    # batches of 5 vs 4: the same float32 forward up to rounding (another GEMM blocking), ~3e-5 of
    # each layer's scale after the tiny model's ~20 layers (tests/test_model_grefel.py, FWD32)
    np.testing.assert_allclose(pred.arrays["corrected"][:4], out.corrected.numpy(), atol=1e-4)
    np.testing.assert_allclose(pred.arrays["embedding"][:4], out.embedding.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(t["conf_primary"].to_numpy()[:4], out.conf_primary.numpy(), atol=1e-4)


def test_reuse_and_resume(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path)
    full = read_predictions(E.evaluate(ckpt, out=tmp_path / "full.parquet", batch_size=4, show_progress=False))

    real = E.run_model
    calls = []

    def flaky(model, images, device, amp=None, crop=112):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped mid-way, after one finished chunk
        return real(model, images, device, amp, crop)

    monkeypatch.setattr(E, "CHUNK", 4)
    monkeypatch.setattr(E, "run_model", flaky)
    out = tmp_path / "resumed.parquet"
    with pytest.raises(KeyboardInterrupt):
        E.evaluate(ckpt, out=out, batch_size=4, show_progress=False)
    assert not out.exists() and len(list((tmp_path / ".resumed.parquet.parts").glob("part-*.npz"))) == 1
    calls.clear()
    monkeypatch.setattr(E, "run_model", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    E.evaluate(ckpt, out=out, batch_size=4, show_progress=False)
    assert len(calls) == 2  # 12 test samples in chunks of 4: the finished one was not redone
    resumed = read_predictions(out)
    np.testing.assert_allclose(resumed.arrays["corrected"], full.arrays["corrected"], atol=1e-6)
    assert not (tmp_path / ".resumed.parquet.parts").exists()

    calls.clear()
    assert E.evaluate(ckpt, out=out, show_progress=False) == out and calls == []  # up to date: reused
    E.evaluate(ckpt, out=out, show_progress=False, force=True)
    assert calls


def test_mismatched_checkpoint_fails_cleanly(tmp_path):
    make_dataset(tmp_path / "toyraf")
    other = make_checkpoint(tmp_path, name="other", record={"classes": ["a", "b", "c", "d"]})
    with pytest.raises(
        CheckpointError, match=r"trained on classes \['a', 'b', 'c', 'd'\].*dataset it was trained on \(toyraf\)"
    ):
        E.evaluate(other, show_progress=False)
    proto = make_checkpoint(tmp_path, name="proto", record={"protocol": "8cls"})
    with pytest.raises(CheckpointError, match="protocol '8cls'"):
        E.evaluate(proto, show_progress=False)

    # a state dict that does not fit the configuration it records
    good = torch.load(make_checkpoint(tmp_path, name="good"), weights_only=True)
    good["model_kwargs"] = {**good["model_kwargs"], "num_anchors": 5}
    save_checkpoint(tmp_path / "bad" / "best.pt", good)
    with pytest.raises(CheckpointError, match="does not fit"):
        E.evaluate(tmp_path / "bad" / "best.pt", show_progress=False)

    # truncated and missing files, and the CLI's one-line error
    data = (tmp_path / "good" / "best.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    from grefel_cli.main import app

    for path, words in (
        (tmp_path / "trunc.pt", "truncated"),
        (tmp_path / "nope.pt", "not found"),
        (other, "trained on classes"),
    ):
        r = CliRunner().invoke(app, ["evaluate", "--ckpt", str(path)])
        assert r.exit_code == 1, r.output
        assert words in error_line(r)  # the app's one-line error, no traceback


def test_checkpoint_rebuilds_its_architecture_after_a_preset_changes(tmp_path, monkeypatch):
    import grefel.models.grefel as G
    import grefel.models.presets as P

    make_dataset(tmp_path / "toyraf")
    path = make_checkpoint(tmp_path, name="run")
    payload = torch.load(path, weights_only=True)
    model = G.create_model(**payload["model_config"])
    assert model.model_kwargs["num_classes"] == 4 and model.model_kwargs["num_anchors"] == 2
    assert payload["model_kwargs"] == model.model_kwargs  # what `grefel train` stores beside model_config
    old_tiny = P._PRESETS["tiny"]
    monkeypatch.setitem(P._PRESETS, "tiny", lambda: {**old_tiny(), "head_hidden": (16,)})  # a later grefel's tiny
    rebuilt = E.model_from_checkpoint(torch.load(path, weights_only=True), path=path)
    state = torch.load(path, weights_only=True)["model"]
    for k, v in rebuilt.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert rebuilt.model_config["preset"] == "tiny" and rebuilt.model_kwargs == model.model_kwargs
    del payload["model_kwargs"]  # the preset name alone no longer says which architecture was trained
    with pytest.raises(CheckpointError, match="not a `grefel train` checkpoint"):
        E.model_from_checkpoint(payload, path=path)


def test_empty_split_and_missing_label_set(tmp_path):
    ckpt = make_checkpoint(tmp_path, label_set="clean")
    with pytest.raises(DatasetError, match="split 'val' of toyraf is empty"):
        E.evaluate(ckpt, split="val", show_progress=False)
    with pytest.raises(DatasetError, match="label set 'sym40' not found"):
        E.evaluate(ckpt, label_set="sym40", show_progress=False)
    p = E.evaluate(ckpt, split="train", show_progress=False)
    assert p.name == "best-train-clean.parquet" and "label_noisy" not in read_predictions(p).table
    # the run's own label set missing from this copy of the dataset: clean labels only, not a failure
    gone = make_checkpoint(tmp_path, label_set="sym30-s0", name="gone")
    p = E.evaluate(gone, show_progress=False)
    assert p.name == "best-test-clean.parquet" and "label_noisy" not in read_predictions(p).table


def test_cli_evaluate(tmp_path):
    from grefel_cli.main import app

    ckpt = make_checkpoint(tmp_path)
    r = CliRunner().invoke(
        app, ["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "p.parquet"), "--labels", "clean"]
    )
    assert r.exit_code == 0, r.output
    meta = read_predictions(tmp_path / "p.parquet").meta
    assert meta["label_set"] == "clean" and json.loads(json.dumps(meta))["dataset"]["name"] == "toyraf"
    r = CliRunner().invoke(app, ["evaluate", "--help"])
    assert "Examples:" in r.output


def error_line(result) -> str:
    """The one-line error a failed command shows ("Error: ..."), whichever way the app reports it."""
    text = result.output + str(result.exception or "")
    assert "Traceback" not in text
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    return lines[-1] if lines else str(result.exception)


def test_batch_size_out_of_range(tmp_path):
    """0 or a negative batch size: the library names the argument, the CLI refuses the flag's value."""
    from grefel_cli.main import app

    ckpt = make_checkpoint(tmp_path)
    for b in (0, -3):
        with pytest.raises(GrefelError, match="batch_size must be a whole number of at least 1") as e:
            E.evaluate(ckpt, batch_size=b, show_progress=False)
        assert "--" not in str(e.value)  # Python callers see the argument, not a flag
    for cmd in (["evaluate", "--ckpt", str(ckpt)], ["report", "--ckpt", str(ckpt), "--tsne-points", "0"]):
        for b in ("0", "-3"):
            r = CliRunner().invoke(app, [*cmd, "-b", b, "--out", str(tmp_path / "out")])
            assert r.exit_code == 2, r.output + str(r.exception)  # a usage error, nothing evaluated
            assert "Invalid value for '--batch-size'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() and not (ckpt.parent / "predictions").exists()


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A read-only folder. Where this process may write there anyway (root ignores the mode), creating
    a file in it is made to fail with EACCES, as the kernel does for everyone else."""
    import errno
    import os
    import tempfile

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield folder
    folder.chmod(0o755)


def test_unwritable_predictions_output(tmp_path, read_only_dir):
    """An output under a file, a folder given as the file, a read-only folder: one line each, before any work."""
    from grefel_cli.main import app

    ckpt = make_checkpoint(tmp_path)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    cases = (
        (tmp_path / "a-file" / "p.parquet", "a-file as the folder of the predictions file: it is a file"),
        (tmp_path / "a-file" / "sub" / "p.parquet", "a-file is a file, not a folder"),
        (tmp_path / "a-folder", "is a folder: give a file path"),
        (read_only_dir / "p.parquet", "cannot write to the folder of the predictions file"),
        (read_only_dir / "sub" / "p.parquet", "cannot write to the folder of the predictions file"),
    )
    for out, words in cases:
        with pytest.raises(GrefelError, match=words):
            E.evaluate(ckpt, out=out, show_progress=False)
        r = CliRunner().invoke(app, ["evaluate", "--ckpt", str(ckpt), "--out", str(out)])
        assert r.exit_code == 1 and words in error_line(r)
    assert list(read_only_dir.iterdir()) == []


def test_unwritable_report_folder(tmp_path, read_only_dir):
    """`report --out` that is a file or a read-only folder: one line, before any checkpoint is evaluated."""
    from grefel_cli.main import app

    ckpt = make_checkpoint(tmp_path)
    (tmp_path / "a-file").write_text("x")
    for out, words in (
        (tmp_path / "a-file", "a-file as the report folder: it is a file"),
        (read_only_dir, "cannot write to the report folder"),
        (read_only_dir / "rep", "cannot write to the report folder"),
    ):
        r = CliRunner().invoke(app, ["report", "--ckpt", str(ckpt), "--tsne-points", "0", "--out", str(out)])
        assert r.exit_code == 1 and words in error_line(r)
    assert not (ckpt.parent / "predictions").exists()  # refused before evaluating
