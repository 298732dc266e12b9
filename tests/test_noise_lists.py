"""`grefel corrupt --from-file`: the published noisy RAF-DB lists (EAC's and SCN's formats) as label sets.

The lists themselves are not shipped with grefel (no licence); these tests write small files in the
same three layouts: EAC's bare names with RAF-DB codes 1-7, SCN's absolute ``_aligned`` paths with
0-based labels (LF), and SCN's ``train.txt`` (CRLF).
"""

import json

import numpy as np
import pytest
from helpers import pattern_image
from PIL import Image
from typer.testing import CliRunner

from grefel.core.errors import DatasetError
from grefel.core.io import write_json
from grefel.core.paths import data_root
from grefel.data.corrupt import read_label_set_attrs
from grefel.data.inspect import inspect
from grefel.data.noise_lists import image_key, import_noise_list
from grefel.data.shards import PreparedDataset, Sample, shard_name, write_shard

RAF = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]  # = RAF-DB codes 1..7


def _rafdb(name="rafdb", per_class=(4, 2)):
    """A prepared 'RAF-DB': per class 4 train and 2 test images, sources as `grefel prepare` stores them."""
    rng = np.random.default_rng(0)
    samples, n_train, n_test = [], 0, 0
    for k in range(7):
        for i in range(sum(per_class)):
            if i < per_class[0]:
                n_train += 1
                src, split = f"basic/Image/aligned/train_{n_train:05d}_aligned.jpg", "train"
            else:
                n_test += 1
                src, split = f"basic/Image/aligned/test_{n_test:04d}_aligned.jpg", "test"
            samples.append(Sample(image=pattern_image("disc", rng, 16), label=k, split=split, source=src))
    root = data_root() / name
    shards = [
        write_shard(
            root / "shards" / shard_name(0),
            samples,
            first_index=0,
            dataset=name,
            protocol="7",
            classes=RAF,
            image_size=16,
        )
    ]
    manifest = {"schema_version": 2, "dataset": name, "protocol": "7", "classes": RAF, "image_size": 16}
    write_json(root / "manifest.json", {**manifest, "shards": shards})
    return PreparedDataset(root)


def _train_rows(ds, flip_every=4):
    """(name, clean class, listed class) of every training image; every 4th label moves to the next class."""
    rows = []
    for src, split, y in zip(ds.meta["source"], ds.meta["split"], ds.labels()):
        if split == "train":
            flip = flip_every and len(rows) % flip_every == 0
            rows.append((src.rsplit("/", 1)[-1], int(y), int((y + 1) % 7 if flip else y)))
    return rows


def _eac_file(path, rows):
    names = [n.replace("_aligned", "") for n, _, _ in rows]
    path.write_text("\n".join(f"{n} {c + 1}" for n, (_, _, c) in zip(names, rows)))  # no final newline, as EAC's
    return path


def _scn_file(path, rows, crlf=False):
    end = "\r\n" if crlf else "\n"
    path.write_bytes(end.join(f"/home/victor/RAFDB_DATA/aligned/{n} {c}" for n, _, c in rows).encode() + b"\n")
    return path


def test_both_formats_give_the_same_label_set_and_leave_clean_labels_alone(tmp_path):
    ds = _rafdb()
    clean = ds.labels().copy()
    rows = _train_rows(ds)
    eac = import_noise_list("rafdb", _eac_file(tmp_path / "noise02.txt", rows), "eac-noise20", noise=0.2)
    scn = import_noise_list("rafdb", _scn_file(tmp_path / "0.2noise_train.txt", rows), "scn-noise20")
    crlf = import_noise_list("rafdb", _scn_file(tmp_path / "train.txt", rows, crlf=True), "scn-crlf")
    assert (eac.fmt, scn.fmt, crlf.fmt) == ("rafdb", "scn", "scn")
    np.testing.assert_array_equal(ds.labels("eac-noise20"), ds.labels("scn-noise20"))
    np.testing.assert_array_equal(ds.labels("scn-crlf"), ds.labels("scn-noise20"))
    np.testing.assert_array_equal(PreparedDataset(ds.root).labels(), clean)  # clean labels untouched
    test = ds.meta["split"].to_numpy() == "test"
    np.testing.assert_array_equal(ds.labels("eac-noise20")[test], clean[test])  # the test split stays clean
    listed = np.array([c for _, _, c in rows])
    np.testing.assert_array_equal(ds.labels("eac-noise20")[~test], listed)
    assert eac.flipped == 7 and eac.realised == pytest.approx(7 / 28) and eac.matched == 28
    assert eac.noise == 0.2 and scn.noise == 0.25  # given, else the realised rate rounded
    # every 4th training row (rows 0, 4, ... in class order) moved to the next class: one per class here
    np.testing.assert_allclose(eac.per_class, [0.25] * 7)
    T = eac.transition
    np.testing.assert_allclose(np.diag(T), 0.75)
    assert all(T[c, (c + 1) % 7] == 0.25 for c in range(7))
    attrs = read_label_set_attrs(ds, "eac-noise20")
    assert attrs["source_file"] == "noise02.txt" and attrs["list_format"] == "rafdb" and attrs["mode"] == "imported"
    assert attrs["realised_rate"] == pytest.approx(0.25) and len(attrs["per_class_flip_rate"]) == 7


def test_rows_of_test_images_are_ignored(tmp_path):
    ds = _rafdb()
    rows = _train_rows(ds, flip_every=0)  # the clean list, like RAF-DB's list_patition_label.txt
    test = [(s.rsplit("/", 1)[-1], 0, 3) for s, sp in zip(ds.meta["source"], ds.meta["split"]) if sp == "test"]
    res = import_noise_list("rafdb", _eac_file(tmp_path / "list_patition_label.txt", rows + test), "clean-list")
    assert res.ignored_test == 14 and res.flipped == 0 and res.realised == 0.0
    np.testing.assert_array_equal(ds.labels("clean-list"), ds.labels())


def test_one_line_errors(tmp_path):
    ds = _rafdb()
    rows = _train_rows(ds)
    partial = _eac_file(tmp_path / "partial.txt", rows[:-3])
    with pytest.raises(DatasetError, match=r"covers 25 of the 28 training images of rafdb: 3 rows are missing"):
        import_noise_list("rafdb", partial)
    stranger = _eac_file(tmp_path / "other.txt", rows + [("train_99999_aligned.jpg", 0, 0)])
    with pytest.raises(DatasetError, match=r"1 of its 29 image names match no image of rafdb \(e.g. train_99999\)"):
        import_noise_list("rafdb", stranger)
    (tmp_path / "code8.txt").write_text("train_00001.jpg 8\n")
    with pytest.raises(DatasetError, match=r"code8.txt line 1: label 8 is outside 1..7 \(RAF-DB codes\)"):
        import_noise_list("rafdb", tmp_path / "code8.txt")
    (tmp_path / "scn7.txt").write_text("/x/aligned/train_00001_aligned.jpg 7\n")
    with pytest.raises(DatasetError, match=r"label 7 is outside 0..6 \(SCN's 0-based labels\)"):
        import_noise_list("rafdb", tmp_path / "scn7.txt")
    (tmp_path / "twice.txt").write_text("train_00001.jpg 1\ntrain_00001.jpg 2\n")
    with pytest.raises(DatasetError, match="twice.txt line 2: train_00001 is listed again with another label"):
        import_noise_list("rafdb", tmp_path / "twice.txt")
    (tmp_path / "bad.txt").write_text("train_00001.jpg one\n")
    with pytest.raises(DatasetError, match=r"bad.txt line 1: expected 'image label'"):
        import_noise_list("rafdb", tmp_path / "bad.txt")
    _rafdb(name="ferg")
    with pytest.raises(DatasetError, match="name RAF-DB's images, and ferg is another dataset"):
        import_noise_list("ferg", _eac_file(tmp_path / "noise01.txt", rows))
    import_noise_list("rafdb", _eac_file(tmp_path / "noise01.txt", rows), "n1")
    assert import_noise_list("rafdb", tmp_path / "noise01.txt", "n1").name == "n1"  # the same file again: fine
    with pytest.raises(DatasetError, match="label set 'n1' already exists"):
        import_noise_list("rafdb", _eac_file(tmp_path / "noise03.txt", _train_rows(ds, 2)), "n1")
    assert not (ds.root / "labels" / "partial.h5").exists()


def test_cli_imports_and_inspect_draws_the_transition_matrix(tmp_path):
    from grefel_cli.main import app

    ds = _rafdb()
    f = _eac_file(tmp_path / "noise02.txt", _train_rows(ds))
    r = CliRunner().invoke(app, ["corrupt", "--dataset", "rafdb", "--from-file", str(f), "--name", "eac-noise20"])
    assert r.exit_code == 0, r.output
    assert "realised rate 0.2500" in r.output and "surprise 25.0 %" in r.output and "P(noisy | clean)" in r.output
    r = CliRunner().invoke(app, ["corrupt", "--dataset", "rafdb"])
    assert r.exit_code == 1 and "--from-file" in r.output + str(r.exception)
    s = inspect("rafdb", label_set="eac-noise20", per_class=1, show=False)
    assert s["noise"]["flipped"] == 7 and s["noise"]["rate"] == pytest.approx(0.25)
    img = np.asarray(Image.open(s["transitions"]).convert("RGB"))
    assert img.shape[0] > 300 and img.std() > 10
    assert json.loads(json.dumps(s["noise"]))["transition"][0][1] == pytest.approx(0.25)


def test_image_keys():
    assert image_key("/home/a/RAFDB/aligned/train_00001_aligned.jpg") == "train_00001"
    assert image_key("train_00001.jpg") == "train_00001"
    assert image_key("Image/aligned.zip#aligned/test_0003_aligned.jpg") == "test_0003"
