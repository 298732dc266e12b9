"""`grefel predict` on videos written by the tests from the synthetic faces, and `grefel evaluate-video`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_evaluate import error_line, make_checkpoint
from typer.testing import CliRunner

from grefel_cli.main import app

FRAMES, RATE, SIZE = 12, 10.0, (320, 240)


def write_video(path, frames, rate=RATE, fourcc="MJPG", size=SIZE):
    import cv2

    h, w = frames[0].shape[:2] if frames else size[::-1]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), rate, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def two_faces(n=FRAMES):
    """Frames with two synthetic faces: a larger one still on the right, one moving right 4 px a frame on the left.

    (Characters 1 and 3 of seed 0 are ones the offline detector finds in every frame; checked when written.)
    """
    from grefel.synth import faces as synth

    a = np.asarray(synth.draw_image(0, 3, "anger", 1, size=112).convert("RGB"))
    b = np.asarray(synth.draw_image(0, 1, "joy", 1, size=112).convert("RGB"))
    frames = []
    for k in range(n):
        f = np.full((SIZE[1], SIZE[0], 3), 70, np.uint8)
        f[60:172, 8 + 4 * k : 120 + 4 * k] = a
        f[70:182, 196:308] = b
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    frames = two_faces()
    write_video(d / "two.avi", frames)
    write_video(d / "two_mp4.mp4", frames, fourcc="mp4v")
    (d / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    write_video(d / "empty.avi", [])  # a valid container holding no frame
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(30)]
    whole = write_video(d / "whole.mkv", noise).read_bytes()
    (d / "cut.mkv").write_bytes(whole[: len(whole) // 2])  # decodes about 15 of the 30 frames its header states
    (d / "whole.mkv").unlink()
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("video-run"), label_set="clean")


def run(args):
    r = CliRunner().invoke(app, ["predict", *map(str, args)])
    return r


def test_rows_per_frame_and_face_with_tracks(clips, ckpt, tmp_path):
    out = tmp_path / "rows.csv"
    r = run(["--ckpt", ckpt, clips / "two.avi", "--csv", out])
    assert r.exit_code == 0, r.output + str(r.exception)
    df = pd.read_csv(out)
    assert len(df) == 2 * FRAMES and df["error"].isna().all()
    assert sorted(df["frame"].unique()) == list(range(FRAMES))
    np.testing.assert_allclose(df["time"], df["frame"] / RATE)
    df["cx"] = (df["x1"] + df["x2"]) / 2
    right, left = df[df["cx"] > 160], df[df["cx"] < 160]
    assert len(right) == len(left) == FRAMES
    # each face keeps its own id in every frame; the larger (right) face is face 0
    assert right["track"].nunique() == 1 and left["track"].nunique() == 1
    assert right["track"].iloc[0] != left["track"].iloc[0] and (right["face"] == 0).all()
    # the left face moves right by 4 px a frame, the right one stays
    slope = np.polyfit(left["frame"], left["cx"], 1)[0]
    assert 3 < slope < 5 and right["cx"].std() < 2
    p = df[[c for c in df if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert "smoothed_class" not in df  # no smoothing asked for
    assert "1 video(s)" in r.output  # one table row; the file name itself may be folded at 80 columns


def test_fps_samples_frames_and_mp4_reads_the_same(clips, ckpt, tmp_path):
    out = tmp_path / "rows.parquet"
    r = run(["--ckpt", ckpt, clips / "two_mp4.mp4", "--fps", 3, "--parquet", out])
    assert r.exit_code == 0, r.output + str(r.exception)
    df = pd.read_parquet(out)
    # 10 frames/s sampled at 3/s: the first frame of each third of a second: 0, 4, 7, 10
    assert sorted(df["frame"].unique()) == [0, 4, 7, 10]
    np.testing.assert_allclose(sorted(df["time"].unique()), [0, 0.4, 0.7, 1.0])


def test_smoothing_is_the_trailing_mean_per_track(clips, ckpt, tmp_path):
    out = tmp_path / "rows.csv"
    r = run(["--ckpt", ckpt, clips / "two.avi", "--smooth", 3, "--csv", out])
    assert r.exit_code == 0, r.output + str(r.exception)
    df = pd.read_csv(out)
    pcols = [c for c in df if c.startswith("p_")]
    for _, g in df.sort_values("frame").groupby("track"):
        want = g[pcols].rolling(3, min_periods=1).mean().to_numpy()
        got = g[["smoothed_" + c for c in pcols]].to_numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)  # float64 means of the same float32 values
        names = np.array([c.removeprefix("p_") for c in pcols])
        assert (g["smoothed_class"].to_numpy() == names[want.argmax(1)]).all()


def test_bad_videos_are_one_line_each_and_the_batch_goes_on(clips, ckpt, tmp_path):
    out = tmp_path / "rows.csv"
    inputs = [clips / n for n in ("junk.mp4", "empty.avi", "cut.mkv", "missing.mkv", "two.avi")]
    r = run(["--ckpt", ckpt, *inputs, "--csv", out])
    assert r.exit_code == 0, r.output + str(r.exception)
    df = pd.read_csv(out)
    errors = {f.rsplit("/", 1)[-1]: e for f, e in zip(df["file"], df["error"]) if isinstance(e, str)}
    assert "not a readable video" in errors["junk.mp4"]
    assert "no frame could be decoded" in errors["empty.avi"]
    assert "decoding stopped after" in errors["cut.mkv"] and "of 30 frames" in errors["cut.mkv"]
    assert "file not found" in errors["missing.mkv"]
    assert len(df[df["file"].str.endswith("two.avi")]) == 2 * FRAMES
    cut = df[df["file"].str.endswith("cut.mkv") & df["error"].isna()]
    assert 5 <= cut["frame"].nunique() < 30  # the frames it did decode are kept (noise: no face in them)
    for name in errors:
        assert sum(name in line for line in r.output.splitlines()) >= 1


def test_annotated_video(clips, ckpt, tmp_path):
    import cv2

    r = run(["--ckpt", ckpt, clips / "two.avi", "--fps", 5, "--save-annotated", tmp_path / "ann"])
    assert r.exit_code == 0, r.output + str(r.exception)
    cap = cv2.VideoCapture(str(tmp_path / "ann" / "two.annotated.mp4"))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    assert len(frames) == 6 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5)
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    src = cv2.cvtColor(two_faces()[0], cv2.COLOR_RGB2BGR)
    assert np.abs(frames[0].astype(int) - src).mean() > 1  # boxes and labels drawn on it
    assert not list((tmp_path / "ann").glob(".*"))  # no temporary file left


def test_unwritable_annotation_folder_is_one_line(clips, ckpt, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target in (blocker, blocker / "sub"):
        r = run(["--ckpt", ckpt, clips / "two.avi", "--save-annotated", target])
        assert r.exit_code == 1
        assert "the folder for annotated copies" in error_line(r), r.output


def test_tracker_keeps_ids_through_short_gaps():
    from grefel.inference.video import IoUTracker

    t = IoUTracker(min_iou=0.3, max_missed=2)
    a, b = np.array([0, 0, 10, 10.0]), np.array([50, 50, 60, 60.0])
    assert t.update(np.stack([a, b])) == [0, 1]
    assert t.update(np.stack([b + 1, a + 1])) == [1, 0]  # order of detections does not matter
    assert t.update(np.zeros((0, 4))) == []
    assert t.update((a + 2)[None]) == [0]  # b missed twice so far: still alive
    assert t.update(np.stack([a + 2, b])) == [0, 1]
    for _ in range(3):
        t.update((a + 2)[None])
    assert t.update(np.stack([a + 2, b])) == [0, 2]  # b missed 3 > 2 frames: a new id
    assert t.update(np.stack([a + 2, a + 3])) == [0, 3]  # one-to-one: a second box near a gets its own id


def test_frame_sampling_slots(clips):
    from grefel.inference.video import VideoReader

    assert [k for k, _, _ in VideoReader(clips / "two.avi")] == list(range(FRAMES))
    assert [k for k, _, _ in VideoReader(clips / "two.avi", fps=5)] == [0, 2, 4, 6, 8, 10]
    assert [k for k, _, _ in VideoReader(clips / "two.avi", fps=50)] == list(range(FRAMES))  # above the rate


# -- evaluate-video ----------------------------------------------------------------------------------
def _annotation(path, names, labels):
    path.write_text(",".join(names) + "\n" + "".join(f"{v}\n" for v in labels))
    return path


def test_evaluate_video_f1_against_sklearn(clips, ckpt, tmp_path):
    from sklearn.metrics import f1_score

    out = tmp_path / "rows.csv"
    r = run(["--ckpt", ckpt, clips / "two.avi", "--fps", 5, "--csv", out])
    assert r.exit_code == 0
    df = pd.read_csv(out)
    classes = [c.removeprefix("p_") for c in df if c.startswith("p_")]
    largest = df[df["face"] == 0].set_index("frame")["top_class"]
    # odd frames were not sampled: they take the nearest sampled frame's prediction (the earlier one on a tie)
    pred = np.array([classes.index(largest[k - k % 2]) for k in range(FRAMES)])
    truth = pred.copy()
    truth[3] = (truth[3] + 1) % len(classes)
    truth[5] = -1  # unlabelled
    ann = _annotation(tmp_path / "two.txt", [c.title() for c in classes], truth)
    res = CliRunner().invoke(app, ["evaluate-video", str(out), str(ann), "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output + str(res.exception)
    import json

    s = json.loads((tmp_path / "s.json").read_text())
    keep = truth >= 0
    assert s["f1"] == pytest.approx(f1_score(truth[keep], pred[keep], average="macro"))
    assert s["frames"] == FRAMES - 1 and s["filled"] == 5  # odd frames 1, 3, 7, 9, 11
    assert s["prediction"] == "top_class" and f"F1 {s['f1']:.4f}" in res.output


def test_evaluate_video_face_choice_and_errors(tmp_path):
    from grefel.core.errors import GrefelError
    from grefel.evaluation.video import evaluate_video

    rows = []
    for k in range(4):  # a big face on the left says "a", a small one on the right "b"
        rows.append(dict(file="/v/clip_right.mp4", frame=k, face=0, x1=0, x2=100, top_class="a"))
        rows.append(dict(file="/v/clip_right.mp4", frame=k, face=1, x1=200, x2=240, top_class="b"))
    df = pd.DataFrame(rows)
    ann = _annotation(tmp_path / "clip_right.txt", ["A", "B", "C"], [1, 1, 1, 1])
    assert evaluate_video(df, [ann]).accuracy == 1.0  # auto: _right -> the rightmost face
    assert evaluate_video(df, [ann], face="largest").accuracy == 0.0
    with pytest.raises(GrefelError, match="not among the annotation's classes"):
        evaluate_video(df.assign(top_class="z"), [ann])
    (tmp_path / "x").mkdir()
    other = _annotation(tmp_path / "x" / "clip_left.txt", ["A", "B"], [0])
    with pytest.raises(GrefelError, match="names classes"):
        evaluate_video(df, [ann, other])
    bad = tmp_path / "bad" / "clip_right.txt"
    bad.parent.mkdir()
    bad.write_text("A,B,C\n0\nzero\n")
    with pytest.raises(GrefelError, match="line 3"):
        evaluate_video(df, [bad])
    with pytest.raises(GrefelError, match="no predictions for any"):
        evaluate_video(df, [_annotation(tmp_path / "nothing.txt", ["A", "B", "C"], [0])])
