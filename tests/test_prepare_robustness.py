"""`grefel prepare` on bad input, interruptions, reruns, workers, and through the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import prepare_fixtures as fx
import pytest
from PIL import Image

from grefel.core.errors import GrefelError
from grefel.data.prepare import prepare
from grefel.data.shards import PreparedDataset, ShardWriter

TESTS = Path(__file__).resolve().parent


def rafdb_with_bad_files(root: Path) -> dict:
    """RAF-DB aligned tree where some images are broken in the ways real copies are."""
    base = root / "basic"
    aligned = base / "Image" / "aligned"
    rgb = fx.noise(100, 100)
    good = fx.jpeg_bytes(rgb)
    rgba = fx.noise(100, 100, 4)
    buf16 = io.BytesIO()
    Image.fromarray(fx.noise(100, 100, 1).astype(np.uint16) * 257).save(buf16, format="PNG")
    files = {
        "train_00001": good,  # fine
        "train_00002": b"",  # zero bytes
        "train_00003": good[: len(good) // 2],  # truncated JPEG
        "train_00004": b"this is not an image at all",  # garbage
        "train_00005": fx.jpeg_bytes(rgb, "PNG"),  # PNG named .jpg
        "train_00006": fx.jpeg_bytes(rgba, "PNG"),  # alpha channel
        "train_00007": None,  # palette
        "train_00008": fx.jpeg_bytes(fx.noise(100, 100, 1)),  # grayscale JPEG
        "test_00001": buf16.getvalue(),  # 16-bit grayscale PNG
        "test_00002": fx.jpeg_bytes(fx.noise(3000, 1)),  # degenerate 1 px wide
    }
    for stem, data in files.items():
        p = aligned / f"{stem}_aligned.jpg"
        if data is None:
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).convert("P").save(p, format="PNG")
        else:
            fx.write(p, data)
    lines = [f"{s}.jpg {1 + i % 7}" for i, s in enumerate(files)]
    fx.write(base / "EmoLabel" / "list_patition_label.txt", ("\n".join(lines) + "\n").encode())
    return {
        "ok": {"train_00001", "train_00005", "train_00006", "train_00007", "train_00008", "test_00001"},
        "bad": {
            "train_00002": "empty file",
            "train_00003": "truncated or corrupt image",
            "train_00004": "not an image",
            "test_00002": "image too small",
        },
    }


def test_corrupt_images_are_handled_or_skipped_with_reasons(tmp_path):
    exp = rafdb_with_bad_files(tmp_path / "raw")
    ds = PreparedDataset(prepare("rafdb", tmp_path / "raw", out=tmp_path / "out", progress=False))
    stems = {s.rsplit("/", 1)[-1].removesuffix("_aligned.jpg") for s in ds.meta["source"]}
    assert stems == exp["ok"]
    with open(ds.root / "skipped.csv", newline="") as f:
        rows = {r["source"].rsplit("/", 1)[-1].removesuffix("_aligned.jpg"): r["reason"] for r in csv.DictReader(f)}
    assert set(rows) == set(exp["bad"])
    for stem, reason in exp["bad"].items():
        assert rows[stem].startswith(reason), rows[stem]
    assert ds.manifest["skipped"]["total"] == 4
    images = ds.read_images(np.arange(len(ds)))
    assert images.dtype == np.uint8 and images.shape[1:] == (128, 128, 3)
    gray = images[list(ds.meta["source"].str.contains("train_00008"))][0]
    assert (gray[..., 0] == gray[..., 2]).all()


def _interrupt_after(monkeypatch, n_shards: int):
    """Make the (n_shards+1)-th shard fail on its first sample, as a Ctrl-C there would."""
    real_add = ShardWriter.add

    def add(self, sample):
        if self.path.name == f"shard-{n_shards:05d}.h5":
            raise KeyboardInterrupt
        return real_add(self, sample)

    monkeypatch.setattr(ShardWriter, "add", add)


def _assert_same(a: PreparedDataset, b: PreparedDataset):
    assert len(a) == len(b) and a.manifest["counts"] == b.manifest["counts"]
    np.testing.assert_array_equal(a.read_images(np.arange(len(a))), b.read_images(np.arange(len(b))))
    for col in ("index", "label", "split", "source", "group"):
        assert list(a.meta[col]) == list(b.meta[col])
    assert a.manifest["skipped"] == b.manifest["skipped"]


def test_interrupt_then_resume_keeps_finished_shards(tmp_path, monkeypatch):
    fx.make_ferg(tmp_path / "raw", per=3)  # 42 images
    ref = PreparedDataset(prepare("ferg", tmp_path / "raw", out=tmp_path / "ref", shard_items=10, progress=False))
    out = tmp_path / "out"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        prepare("ferg", tmp_path / "raw", out=out, shard_items=10, progress=False)
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == ["shard-00000.h5", "shard-00001.h5"]  # whole shards only, no temporary files
    assert not (out / "manifest.json").exists() and (out / "prepare-state.json").exists()
    stamp = {p: os.stat(out / "shards" / p).st_mtime_ns for p in shards}
    monkeypatch.undo()
    ds = PreparedDataset(prepare("ferg", tmp_path / "raw", out=out, shard_items=10, progress=False))
    _assert_same(ds, ref)
    assert {p: os.stat(out / "shards" / p).st_mtime_ns for p in shards} == stamp  # not rewritten
    assert not (out / "prepare-state.json").exists()


def test_resume_refuses_other_options_and_changed_raw_items(tmp_path, monkeypatch):
    fx.make_ferg(tmp_path / "raw", per=3)
    out = tmp_path / "out"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        prepare("ferg", tmp_path / "raw", out=out, shard_items=10, progress=False)
    monkeypatch.undo()
    with pytest.raises(GrefelError, match=r"interrupted prepare with other options: size \(128 -> 96\)"):
        prepare("ferg", tmp_path / "raw", out=out, shard_items=10, size=96, progress=False)
    (tmp_path / "raw" / "FERG_DB_256" / "aia" / "aia_anger" / "aia_anger_1.png").unlink()  # first chunk changes
    with pytest.raises(GrefelError, match="changed since the interrupted run"):
        prepare("ferg", tmp_path / "raw", out=out, shard_items=10, progress=False)
    ds = PreparedDataset(prepare("ferg", tmp_path / "raw", out=out, shard_items=10, progress=False, overwrite=True))
    assert len(ds) == 41


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from grefel.data import prepare as prep
    real = prep._close_shard
    def slow(*a, **k):  # give the parent time to kill us between shards
        n = real(*a, **k)
        time.sleep(1.0)
        return n
    prep._close_shard = slow
    prep.prepare("ferg", sys.argv[1], out=sys.argv[2], shard_items=6, progress=False)
""")


def test_killed_process_resumes_without_duplicates(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "raw"), str(out)], env=env)
    deadline = time.time() + 120
    while not (out / "shards" / "shard-00001.h5").exists():
        assert proc.poll() is None and time.time() < deadline, "the child ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    for p in (out / "shards").glob("shard-*.h5"):  # every shard that exists is whole
        with h5py.File(p, "r") as f:
            assert f["images"].shape[0] == f["label"].shape[0] > 0
    ds = PreparedDataset(prepare("ferg", tmp_path / "raw", out=out, shard_items=6, progress=False))
    assert len(ds) == 42 and list(ds.meta["index"]) == list(range(42))
    assert ds.meta["source"].is_unique
    assert not list((out / "shards").glob(".*.tmp"))


def test_rerun_of_a_complete_folder_is_a_no_op_and_overwrite_redoes_it(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=1)
    out = prepare("ferg", tmp_path / "raw", out=tmp_path / "out", progress=False)
    stamp = os.stat(out / "manifest.json").st_mtime_ns
    assert prepare("ferg", tmp_path / "raw", out=out, progress=False) == out
    assert os.stat(out / "manifest.json").st_mtime_ns == stamp
    with pytest.raises(GrefelError, match=r"other options: align \(none -> retinaface-onnx\)"):
        prepare("ferg", tmp_path / "raw", out=out, align="retinaface-onnx", progress=False)
    prepare("ferg", tmp_path / "raw", out=out, overwrite=True, progress=False)
    assert os.stat(out / "manifest.json").st_mtime_ns != stamp


def test_refuses_to_write_into_or_delete_a_foreign_folder(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=1)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(GrefelError, match="not"):
            prepare("ferg", tmp_path / "raw", out=foreign, overwrite=overwrite, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_bad_options(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=1)
    with pytest.raises(GrefelError, match="unknown align method"):
        prepare("ferg", tmp_path / "raw", align="mtcnn", progress=False)
    with pytest.raises(GrefelError, match="ships no landmarks"):
        prepare("ferg", tmp_path / "raw", align="landmarks", progress=False)
    with pytest.raises(GrefelError, match="no protocol '8'"):
        prepare("ferg", tmp_path / "raw", protocol="8", progress=False)


def test_workers_give_the_same_shards_as_one_process(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=3)
    one = PreparedDataset(prepare("ferg", tmp_path / "raw", out=tmp_path / "one", shard_items=16, progress=False))
    two = PreparedDataset(
        prepare("ferg", tmp_path / "raw", out=tmp_path / "two", shard_items=16, workers=2, progress=False)
    )
    _assert_same(one, two)
    assert [s["sha256"] for s in one.shards] != [] and len(one.shards) == 3


def test_detector_lanes_give_the_same_shards_as_one_lane(tmp_path, monkeypatch):
    import grefel.data.prepare as prep

    fx.make_jaffe(tmp_path / "raw")  # the offline detector on real photographs (and one blank image)
    one = PreparedDataset(prepare("jaffe", tmp_path / "raw", out=tmp_path / "one", threads=1, progress=False))
    monkeypatch.setattr(prep, "_lanes", lambda *a: 3)  # three threads whatever this machine's core count
    three = PreparedDataset(prepare("jaffe", tmp_path / "raw", out=tmp_path / "three", progress=False))
    _assert_same(one, three)
    np.testing.assert_array_equal(one.landmarks(), three.landmarks())
    lanes = [json.loads((d.root / "provenance.json").read_text())["options"]["lanes"] for d in (one, three)]
    assert lanes == [1, 3]


def test_ordered_map_keeps_the_order_whatever_finishes_first():
    import random
    import threading

    from grefel.data.prepare import ordered_map

    seen = set()

    class Work:  # stands in for ItemWork: uneven durations, so later items often finish first
        def __call__(self, item):
            seen.add(threading.current_thread().name)
            time.sleep(random.Random(item).uniform(0, 0.004))
            return item * item

        def run_batch(self, items):
            return [self(i) for i in items]

    pairs = [(i, i) for i in range(200)]
    assert list(ordered_map(Work(), pairs, lanes=3, window=2)) == [(i, i * i) for i in range(200)]
    assert len(seen) > 1 and all(n.startswith("grefel-prepare") for n in seen)
    assert list(ordered_map(Work(), pairs[:5])) == [(i, i * i) for i in range(5)]


def test_default_data_root_and_prepared_name(tmp_path, _isolated_data_root):
    fx.make_affectnet_npy(tmp_path / "raw")
    out = prepare("affectnet", tmp_path / "raw", protocol="7", progress=False)
    assert out == _isolated_data_root / "affectnet7"
    other = tmp_path / "root2"
    assert prepare("affectnet", tmp_path / "raw", data_root=other, progress=False) == other / "affectnet8"


def test_shards_are_readable_without_grefel(tmp_path):
    fx.make_rafdb(tmp_path / "raw", aligned="none")
    out = prepare("rafdb", tmp_path / "raw", out=tmp_path / "out", progress=False)
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    with h5py.File(out / manifest["shards"][0]["file"], "r") as f:  # plain h5py, as any HDF5 tool would
        assert f["images"].dtype == np.uint8 and f["images"].shape[1:] == (128, 128, 3)
        assert json.loads(f.attrs["classes"]) == manifest["classes"]
        assert set(f["attributes"]) == {"gender", "race", "age"}
        assert f["landmarks"].shape[1:] == (5, 2) and f["transform"].shape[1:] == (2, 3)
        assert len(f["source_sha256"][0]) == 64
    from grefel.core.io import sha256_file

    assert all(sha256_file(out / s["file"]) == s["sha256"] for s in manifest["shards"])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["source_files"][0]["path"].endswith("list_patition_label.txt") and len(prov["images_sha256"]) == 64


def test_cli_prepare_then_inspect(tmp_path):
    from typer.testing import CliRunner

    from grefel_cli.main import app

    fx.make_ferg(tmp_path / "raw", per=1)
    root = tmp_path / "root"
    r = CliRunner().invoke(app, ["prepare", "ferg", str(tmp_path / "raw"), "--data-root", str(root)])
    assert r.exit_code == 0, r.output
    assert "14 faces" in r.output and (root / "ferg" / "manifest.json").is_file()
    r = CliRunner().invoke(app, ["inspect", "ferg", "--data-root", str(root), "--per-class", "1"])
    assert r.exit_code == 0, r.output
    assert "happiness" in r.output and (root / "ferg" / "contact-sheet.png").is_file()
    r = CliRunner().invoke(app, ["prepare", "ferg", str(tmp_path / "nowhere"), "--data-root", str(root)])
    assert r.exit_code == 1
    assert "raw folder" in (r.output + str(r.exception)) and "not found" in (r.output + str(r.exception))
    for cmd in ("prepare", "inspect"):
        r = CliRunner().invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Examples:" in r.output
