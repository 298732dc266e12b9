"""Data integrity and bad input on the data side: raw trees never mixed, duplicate label lines,
shards verified, one rule for label sets, failed preparations, unwritable outputs, locks."""

from __future__ import annotations

import csv
import os
import shutil
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
from helpers import make_prepared, one_line_error
from typer.testing import CliRunner

from grefel.core.errors import DatasetError, GrefelError
from grefel.data.prepare import prepare
from grefel.data.shards import PreparedDataset, ShardWriter
from grefel.synth.faces import generate

TESTS = Path(__file__).resolve().parent
SMALL = dict(characters=2, per_class=3, imbalance=1.0, size=32, progress=False)  # 42 images


def _cli(*args: str):
    from grefel_cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _interrupt_after(monkeypatch, n_shards: int):
    """Make the (n_shards+1)-th shard fail on its first sample, as a Ctrl-C there would."""
    real_add = ShardWriter.add

    def add(self, sample):
        if self.path.name == f"shard-{n_shards:05d}.h5":
            raise KeyboardInterrupt
        return real_add(self, sample)

    monkeypatch.setattr(ShardWriter, "add", add)


def _sources_sha(ds: PreparedDataset) -> set[str]:
    out = set()
    for e in ds.shards:
        with h5py.File(ds.root / e["file"], "r") as f:
            out |= {bytes(v).decode() for v in f["source_sha256"][:]}
    return out


def _file_shas(root: Path) -> set[str]:
    import hashlib

    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}


# -- 1. two raw trees never mixed ---------------------------------------------------------------
def test_resume_from_another_raw_copy_is_refused(tmp_path, monkeypatch):
    a, b = generate(tmp_path / "A", seed=0, **SMALL), generate(tmp_path / "B", seed=1, **SMALL)
    out = tmp_path / "X"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        prepare("ferg", a, out=out, shard_items=10, progress=False)
    monkeypatch.undo()
    with pytest.raises(GrefelError, match=r"interrupted prepare from another raw folder .*--force"):
        prepare("ferg", b, out=out, shard_items=10, progress=False)
    ds = PreparedDataset(prepare("ferg", b, out=out, shard_items=10, progress=False, force=True))
    assert len(ds) == 42 and _sources_sha(ds) == _file_shas(b)  # all from B, none from A


def test_resume_after_the_raw_copy_was_replaced_in_place_is_refused(tmp_path, monkeypatch):
    raw = generate(tmp_path / "raw", seed=0, **SMALL)
    out = tmp_path / "X"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        prepare("ferg", raw, out=out, shard_items=10, progress=False)
    monkeypatch.undo()
    shutil.rmtree(raw)
    generate(raw, seed=1, **SMALL)  # same path, same names, other images
    with pytest.raises(GrefelError, match="raw items that changed since the interrupted run"):
        prepare("ferg", raw, out=out, shard_items=10, progress=False)


def test_finished_dataset_from_another_raw_tree_is_not_kept_silently(tmp_path):
    a, b = generate(tmp_path / "A", seed=0, **SMALL), generate(tmp_path / "B", seed=1, **SMALL)
    out = prepare("ferg", a, out=tmp_path / "X", progress=False)
    assert prepare("ferg", a, out=out, progress=False) == out  # same tree, same options: nothing to do
    with pytest.raises(GrefelError, match=r"already holds a dataset prepared from another raw folder .*--force"):
        prepare("ferg", b, out=out, progress=False)
    image = next(a.rglob("*.png"))
    image.write_bytes(image.read_bytes())  # rewritten in place: its modification time changes
    os.utime(image, ns=(0, 10**9))
    with pytest.raises(GrefelError, match="raw items that changed since"):
        prepare("ferg", a, out=out, progress=False)
    r = _cli("prepare", "ferg", b, "--out", out)
    one_line_error(r, "another raw folder", "--force")


@pytest.mark.parametrize("layout", ["affectnet-npy", "rafdb-manual"])
def test_a_changed_per_image_annotation_file_is_noticed(tmp_path, layout):
    if layout == "affectnet-npy":
        fx.make_affectnet_npy(tmp_path / "raw")
        dataset, ann = "affectnet", tmp_path / "raw" / "train_set" / "annotations" / "3_exp.npy"
    else:
        fx.make_rafdb(tmp_path / "raw", aligned="none")
        dataset, ann = "rafdb", tmp_path / "raw" / "basic" / "Annotation" / "manual" / "train_00003_manu_attri.txt"
    out = prepare(dataset, tmp_path / "raw", out=tmp_path / "out", progress=False)
    os.utime(ann, ns=(0, 10**9))  # rewritten since (the label or the points may differ)
    with pytest.raises(GrefelError, match="raw items that changed since"):
        prepare(dataset, tmp_path / "raw", out=out, progress=False)


SLOW_PREPARE = textwrap.dedent("""
    import sys, time
    from grefel.data import prepare as prep
    real = prep._close_shard
    def slow(*a, **k):  # hold the folder for a while
        n = real(*a, **k)
        time.sleep(1.0)
        return n
    prep._close_shard = slow
    prep.prepare("ferg", sys.argv[1], out=sys.argv[2], shard_items=6, progress=False)
""")


def test_concurrent_prepares_into_one_folder_the_second_is_refused(tmp_path):
    a, b = generate(tmp_path / "A", seed=0, **SMALL), generate(tmp_path / "B", seed=1, **SMALL)
    out = tmp_path / "X"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, str(a), str(out)], env=env)
    try:
        deadline = time.time() + 120
        while not (out / "shards" / "shard-00000.h5").exists():
            assert proc.poll() is None and time.time() < deadline, "the first prepare ended too soon"
            time.sleep(0.05)
        for raw in (a, b):  # the same raw tree, and another copy
            with pytest.raises(GrefelError, match=r"another grefel prepare \(process \d+\) is writing"):
                prepare("ferg", raw, out=out, shard_items=6, progress=False)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    ds = PreparedDataset(out)
    assert len(ds) == 42 and _sources_sha(ds) == _file_shas(a)
    assert prepare("ferg", a, out=out, shard_items=6, progress=False) == out  # the lock was released


# -- 2. duplicated label lines ------------------------------------------------------------------
def test_duplicate_affectnet_rows_keep_the_first(tmp_path):
    fx.make_affectnet_csv(tmp_path / "raw")
    lists = tmp_path / "raw" / "Manually_Annotated_file_lists"
    with open(lists / "training.csv", newline="") as f:
        rows = list(csv.reader(f))
    first = rows[1]  # 100/img0.jpg, expression 0
    same, other = list(first), list(first)
    other[6] = "3"
    with open(lists / "training.csv", "a", newline="") as f:
        csv.writer(f).writerows([same, other])
    with open(lists / "validation.csv", "a", newline="") as f:
        csv.writer(f).writerow(other)  # named again in the other file
    ds = PreparedDataset(prepare("affectnet", tmp_path / "raw", out=tmp_path / "out", progress=False))
    kept = ds.meta[ds.meta["source"].str.endswith("100/img0.jpg")]
    assert len(kept) == 1 and kept["label"].tolist() == [0] and kept["split"].tolist() == ["train"]
    with open(ds.root / "skipped.csv", newline="") as f:
        dup = [r for r in csv.DictReader(f) if "duplicate" in r["reason"]]
    n = len(rows)  # the appended rows are lines n + 1 and n + 2
    assert [r["source"].rsplit("/", 1)[-1] for r in dup] == [
        f"training.csv#{n + 1}",
        f"training.csv#{n + 2}",
        "validation.csv#4",
    ]
    assert dup[0]["reason"] == "duplicate label line (same image and label as training.csv#2)"
    assert dup[1]["reason"].startswith("conflicting duplicate label line (training.csv#2 says '0', this line '3'")
    assert ds.manifest["skipped"]["duplicates"] == {"lines": 3, "conflicting": 2}


def test_video_annotated_in_both_sets_keeps_the_train_labels(tmp_path):
    exp = fx.make_affwild2(tmp_path / "raw")
    ann = tmp_path / "raw" / "annotations" / "EXPR_Classification_Challenge"
    shutil.copy(ann / "Train_Set" / "video7_left.txt", ann / "Validation_Set" / "video7_left.txt")
    ds = PreparedDataset(prepare("affwild2", tmp_path / "raw", out=tmp_path / "out", progress=False))
    assert len(ds) == len(exp["expect"]) and ds.meta["source"].is_unique
    assert ds.manifest["skipped"]["duplicates"] == {"lines": 2, "conflicting": 0}


def test_inspect_counts_duplicates_and_conflicts(tmp_path):
    fx.make_rafdb(tmp_path / "raw")
    out = prepare("rafdb", tmp_path / "raw", out=tmp_path / "out", progress=False)
    r = _cli("inspect", out, "--per-class", "1")
    assert r.exit_code == 0, r.output
    assert "duplicate label lines: 2, 1 of them with another label" in r.output


# -- 3. shards verified ---------------------------------------------------------------------------
@pytest.fixture
def prepared(tmp_path) -> Path:
    raw = generate(tmp_path / "raw", seed=0, **SMALL)
    return prepare("ferg", raw, out=tmp_path / "ds", shard_items=20, progress=False)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_shard_is_a_one_line_error_naming_it_and_the_rebuild(prepared):
    shard = prepared / "shards" / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"shard-00001\.h5 of ferg is damaged .*grefel prepare ferg .* --force"):
        PreparedDataset(prepared)
    one_line_error(_cli("inspect", prepared), "shard-00001.h5", "grefel prepare ferg")
    shard.unlink()
    with pytest.raises(DatasetError, match=r"shard-00001\.h5 of ferg is missing"):
        PreparedDataset(prepared)


def test_flipped_byte_in_the_string_area(prepared):
    shard = prepared / "shards" / "shard-00000.h5"
    with h5py.File(shard, "r") as f:
        first = f["source"].asstr()[0]
    _flip(shard, shard.read_bytes().index(first.encode()))  # no longer UTF-8
    ds = PreparedDataset(prepared)  # same size: opens
    with pytest.raises(DatasetError, match=r"shard-00000\.h5 of ferg cannot be read .*grefel prepare ferg"):
        ds.meta  # noqa: B018
    with pytest.raises(DatasetError, match="does not match the sha256"):
        ds.verify_contents()
    one_line_error(_cli("inspect", prepared), "shard-00000.h5")


def test_flipped_byte_in_the_pixels_is_found_by_verify(prepared):
    shard = prepared / "shards" / "shard-00001.h5"
    ds = PreparedDataset(prepared)
    assert ds.verify_contents() == 3 and ds.verify_contents() == 0  # the second call uses the cache
    assert (prepared / "verified.json").is_file()
    before = ds.read_images([20])[0].copy()
    with h5py.File(shard, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    _flip(shard, offset + 5)
    ds = PreparedDataset(prepared)
    assert (ds.read_images([20])[0] != before).sum() == 1  # read as is: only the sha256 can tell
    with pytest.raises(DatasetError, match=r"shard-00001\.h5 of ferg does not match the sha256 .*--force"):
        ds.verify_contents()  # its mtime changed: hashed again, although cached as good before
    one_line_error(_cli("inspect", prepared, "--verify"), "shard-00001.h5", "sha256")


def test_shard_damaged_while_open_is_a_dataset_error(prepared):
    ds = PreparedDataset(prepared)
    ds.meta  # noqa: B018
    shard = prepared / "shards" / "shard-00002.h5"
    shard.write_bytes(shard.read_bytes()[:4096])
    with pytest.raises(DatasetError, match=r"shard-00002\.h5 of ferg cannot be read"):
        ds.read_images([40, 41])
    with pytest.raises(DatasetError, match=r"shard-00002\.h5 of ferg cannot be read"):
        ds.landmarks()


def test_inspect_verify_reports_all_shards_checked(prepared):
    r = _cli("inspect", prepared, "--verify", "--per-class", "1")
    assert r.exit_code == 0, r.output
    assert "all 3 match" in r.output


# -- 4. one rule for label sets -------------------------------------------------------------------
def test_label_set_of_another_preparation_is_refused_everywhere(tmp_path):
    from grefel.data.corrupt import corrupt
    from grefel.data.inspect import inspect

    one = make_prepared(tmp_path / "one", name="toy", n_per_class=6, image_size=16, seed=0)
    two = make_prepared(tmp_path / "two", name="toy", n_per_class=6, image_size=16, seed=1)
    corrupt(one, 0.2)
    (two / "labels").mkdir()
    for f in ("sym20-s0.h5", "sym20-s0.sha256"):  # same length, other preparation
        shutil.copy(one / "labels" / f, two / "labels" / f)
    assert len(PreparedDataset(one).labels("sym20-s0")) == 24
    with pytest.raises(DatasetError, match="made for another preparation of toy"):
        PreparedDataset(two).labels("sym20-s0")
    with pytest.raises(DatasetError, match="made for another preparation of toy"):
        inspect(two, label_set="sym20-s0", show=False)
    one_line_error(_cli("inspect", two, "--labels", "sym20-s0"), "another preparation")


def test_split_set_of_another_preparation_is_refused(tmp_path):
    from grefel.data.refine import refine

    one = make_prepared(tmp_path / "one", name="toy", n_per_class=12, image_size=16, split="", seed=0)
    two = make_prepared(tmp_path / "two", name="toy", n_per_class=12, image_size=16, split="", seed=1)
    refine(one, console=_quiet())
    (two / "splits").mkdir()
    shutil.copy(one / "splits" / "default.h5", two / "splits" / "default.h5")
    with pytest.raises(DatasetError, match="split set 'default' was made for another preparation"):
        PreparedDataset(two).splits()


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


# -- 5. failed preparations -----------------------------------------------------------------------
def test_label_file_in_the_wrong_format_is_an_error_not_an_empty_dataset(tmp_path):
    fx.make_rafdb(tmp_path / "raw")
    label_file = tmp_path / "raw" / "basic" / "EmoLabel" / "list_patition_label.txt"
    good = label_file.read_text()
    label_file.write_text(good.replace(" ", ","))  # "train_00001.jpg,1": another format
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"no face was written: all 14 raw items .* were skipped \(14 malformed"):
        prepare("rafdb", tmp_path / "raw", out=out, progress=False)
    assert not (out / "manifest.json").exists() and (out / "skipped.csv").is_file()
    one_line_error(_cli("prepare", "rafdb", tmp_path / "raw", "--out", out), "no face was written")
    label_file.write_text(good)  # fixed: the same command now prepares it, no --force needed
    assert len(PreparedDataset(prepare("rafdb", tmp_path / "raw", out=out, progress=False))) == 9


@pytest.mark.parametrize(
    "kw",
    [dict(n_per_class=0), dict(n_per_class=[1, 0, 0, 0]), dict(n_per_class=2, n_groups=1)],
    ids=["empty", "one-image", "one-group"],
)
def test_refine_on_an_empty_or_odd_dataset_is_aone_line_error(tmp_path, kw):
    from grefel.data.refine import refine

    root = make_prepared(tmp_path / "odd", image_size=16, **kw)
    for method in ("auto", "group", "random"):
        with pytest.raises(DatasetError, match="no labelled face|too small for a"):
            refine(root, method=method, console=_quiet())
    one_line_error(_cli("refine", "--dataset", root))


# -- 6. bad input ------------------------------------------------------------------------------------
def test_non_utf8_file_and_folder_names_are_stored_safely(tmp_path):
    fx.make_ferg(tmp_path / "raw", per=1)
    raw = os.fsencode(tmp_path / "raw")
    folder = os.path.join(raw, b"caf\xe9", b"aia", b"aia_anger")  # a Latin-1 folder name
    os.makedirs(folder)
    png = next((tmp_path / "raw").rglob("*.png")).read_bytes()
    with open(os.path.join(folder, b"aia_anger_7.png"), "wb") as f:
        f.write(png)
    with open(os.path.join(raw, b"\xff\xfenotes.png"), "wb") as f:  # not a FERG name: skipped
        f.write(png)
    ds = PreparedDataset(prepare("ferg", tmp_path / "raw", out=tmp_path / "out", progress=False))
    assert len(ds) == 15 and "caf\\xe9/aia/aia_anger/aia_anger_7.png" in set(ds.meta["source"])
    with open(ds.root / "skipped.csv", newline="", encoding="utf-8") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["\\xff\\xfenotes.png"]


def test_affectnet_infinite_and_huge_numbers_are_skipped(tmp_path):
    fx.make_affectnet_csv(tmp_path / "raw")
    lists = tmp_path / "raw" / "Manually_Annotated_file_lists"
    with open(lists / "training.csv", newline="") as f:
        row = list(csv.reader(f))[1]
    bad = []
    for i, expr in enumerate(["inf", "1e400", "-inf", "nan", "2.5"]):
        bad.append([f"300/x{i}.jpg", *row[1:6], expr, "0.1", "0.2"])
    bad.append(["101/img1.jpg", *row[1:6], "1", "inf", "1e400"])  # valence / arousal out of range: unused
    with open(lists / "training.csv", "w", newline="") as f:
        csv.writer(f).writerows([fx.AFFECTNET_HEADER, *bad])
    ds = PreparedDataset(prepare("affectnet", tmp_path / "raw", out=tmp_path / "out", progress=False))
    assert ds.meta["source"].str.endswith("img1.jpg").sum() == 1
    assert ds.manifest["skipped"]["reasons"]["malformed row"] == 5
    box = [fx.AFFECTNET_HEADER, ["101/img1.jpg", "0", "0", "inf", "1e400", *row[5:]]]
    with open(lists / "training.csv", "w", newline="") as f:
        csv.writer(f).writerows(box)
    ds = PreparedDataset(prepare("affectnet", tmp_path / "raw", out=tmp_path / "box", align="none", progress=False))
    assert ds.manifest["skipped"]["reasons"]["invalid face box"] == 1


def test_affectnet_npy_infinite_label_is_skipped(tmp_path):
    fx.make_affectnet_npy(tmp_path / "raw")
    np.save(tmp_path / "raw" / "train_set" / "annotations" / "0_exp.npy", np.array(np.inf))
    np.save(tmp_path / "raw" / "train_set" / "annotations" / "2_exp.npy", np.array("1e400"))
    ds = PreparedDataset(prepare("affectnet", tmp_path / "raw", out=tmp_path / "out", progress=False))
    assert ds.manifest["skipped"]["reasons"]["malformed annotation"] == 2


@pytest.fixture
def readonly(tmp_path) -> Path:
    """A folder in which nothing can be created (root writes through permissions: then under /sys)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    if os.access(d, os.W_OK):
        if not Path("/sys").is_dir():
            pytest.skip("no read-only folder available to this user")
        d = Path("/sys/grefel-readonly")
    yield d
    (tmp_path / "ro").chmod(0o755)


def test_unwritable_outputs_are_one_line_errors(tmp_path, readonly):
    fx.make_ferg(tmp_path / "raw", per=1)
    raw = tmp_path / "raw"
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, words in ((a_file, "is a file"), (readonly / "out", "cannot write to")):
        with pytest.raises(GrefelError, match=words):
            prepare("ferg", raw, out=out, progress=False)
        one_line_error(_cli("prepare", "ferg", raw, "--out", out), words)
    for out, words in ((a_file / "sub", "lies under a file"), (readonly / "synth", "cannot write")):
        with pytest.raises(GrefelError, match=words):
            generate(out, **SMALL)
        one_line_error(_cli("synth", out, "--characters", "1", "--per-class", "1"), words)
    ds = prepare("ferg", raw, out=tmp_path / "ds", progress=False)
    for sheet in (readonly / "sheet.png", a_file / "sheet.png", tmp_path):
        one_line_error(_cli("inspect", ds, "--sheet", sheet, "--per-class", "1"), "cannot write the contact sheet")


def test_skipped_summary_one_line_per_reason_whole(tmp_path):
    base = tmp_path / "raw" / "basic"
    good = fx.jpeg_bytes(fx.noise(100, 100))
    lines = []
    for i, cut in enumerate([0.3, 0.5, 0.7, 1.0, 1.0]):  # three JPEGs truncated at different points
        fx.write(base / "Image" / "aligned" / f"train_{i + 1:05d}_aligned.jpg", good[: int(len(good) * cut)])
        lines.append(f"train_{i + 1:05d}.jpg {i + 1}")
    fx.write(base / "EmoLabel" / "list_patition_label.txt", ("\n".join(lines) + "\n").encode())
    fx.write(tmp_path / "ferg" / "aia" / "aia_joy" / "aia_joy_1.png", fx.jpeg_bytes(fx.noise(40, 40), "PNG"))
    fx.write(tmp_path / "ferg" / "aia" / "odd name [x].png", good)
    r = _cli("prepare", "rafdb", tmp_path / "raw", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert [line.split() for line in r.output.splitlines() if "truncated" in line] == [
        ["3", "truncated", "or", "corrupt", "image"]
    ]
    r = _cli("prepare", "ferg", tmp_path / "ferg", "--out", tmp_path / "ferg-out")
    reason = "name does not follow <character>/<character>_<expression>/<character>_<expression>_<n>.png"
    assert f"  {1:>8}  {reason}" in r.output.splitlines()  # whole, on one line, at any terminal width


# -- 7. functions short enough to read on one screen ------------------------------------------------
