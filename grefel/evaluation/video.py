"""`grefel evaluate-video`: per-frame predictions of `grefel predict` scored against ABAW annotations.

An ABAW expression annotation file (Aff-Wild2, ``<video>.txt``) has a header line naming the
classes (7 in ABAW1/2, 8 with ``Other`` from ABAW3), then one integer per frame: line k after the
header is frame k of the video (``k:05d``.jpg in ``cropped_aligned``), i.e. frame index k - 1 in
`grefel predict`'s rows; -1 marks an unlabelled frame. Predictions are matched to annotation files
by the video's file name without suffix.

Per annotated frame, one face's prediction is scored: ``face="largest"`` (face 0), ``"left"`` /
``"right"`` (the leftmost / rightmost box: Aff-Wild2 annotates two-person videos as
``<video>_left.txt`` and ``<video>_right.txt``), or ``"auto"`` (left / right from that suffix,
else the largest). An annotated frame without a prediction of its own (not sampled, or no face
found) takes the prediction of the nearest frame that has one; how many did is reported.

The score is the challenge's: F1 per class and their unweighted mean over all frames of all videos
pooled (scikit-learn's ``f1_score(average="macro")``, over the classes that occur in the labels or
the predictions, as the challenge's evaluation script calls it; on the whole Validation_Set every
class occurs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grefel.core.errors import DatasetError, GrefelError
from grefel.core.io import regular_file, same_file

PREDICTION_COLUMNS = {"corrected": "top_class", "primary": "primary_class", "smoothed": "smoothed_class"}
MAX_FRAMES = 10_000_000  # label lines of one annotation file (over four days of video at 25 frames/s)
FACE_CHOICES = ("auto", "largest", "left", "right")


def read_annotation(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(class names of the header, lower case; one integer label per frame, -1 = unlabelled).

    A UTF-8 byte-order mark is dropped; a file without a labelled frame (a header alone, or every
    label -1), or with more than :data:`MAX_FRAMES` lines, is a one-line DatasetError."""
    path = regular_file(path, "annotation file")
    if path.stat().st_size > MAX_FRAMES * 4:
        raise DatasetError(f"{path} is larger than an annotation of {MAX_FRAMES:,} frames: is it an annotation file?")
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read annotation file {path} ({e.strerror})") from None
    if len(lines) > MAX_FRAMES + 1:
        raise DatasetError(f"{path} has {len(lines) - 1:,} label lines: at most {MAX_FRAMES:,} frames are scored")
    names = [c.strip().lower() for c in (lines[0] if lines else "").split(",") if c.strip()]
    if len(names) < 2:
        raise DatasetError(f"{path} does not start with a header naming the classes (e.g. Neutral,Anger,...)")
    labels = []
    for k, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            v = int(line.strip())
        except ValueError:
            raise DatasetError(f"{path} line {k}: {line.strip()[:20]!r} is not an integer label") from None
        if not -1 <= v < len(names):
            raise DatasetError(f"{path} line {k}: label {v} is outside -1..{len(names) - 1} for {len(names)} classes")
        labels.append(v)
    labels = np.asarray(labels, np.int64)
    if not (labels >= 0).any():
        what = "a header alone" if not len(labels) else f"{len(labels)} frames, every one -1 (unlabelled)"
        raise DatasetError(f"{path} holds no labelled frame ({what}): give the annotation of a labelled video")
    return names, labels


def annotation_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Files given directly plus the ``*.txt`` files in given folders, each file once (a file given
    twice, or also found in a given folder, counts once); two files for one video are refused."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.glob("*.txt") if not q.name.startswith("."))
        elif p.exists():
            found = [regular_file(p, "annotation file")]
        else:
            raise DatasetError(f"annotation file or folder {p} not found")
        out.extend(q for q in found if not any(same_file(q, o) for o in out))
    if not out:
        raise DatasetError(f"no annotation files (*.txt) in {', '.join(map(str, paths))}")
    by_video: dict[str, Path] = {}
    for q in out:
        if q.stem in by_video:
            raise DatasetError(f"two annotation files for video {q.stem}: {by_video[q.stem]} and {q}; give one of them")
        by_video[q.stem] = q
    return out


def read_table(predictions):
    """A `grefel predict` table (DataFrame, .csv or .parquet path) with its video rows' required columns."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        df = predictions
    else:
        p = Path(predictions)
        if not p.is_file():
            raise GrefelError(f"predictions file {p} not found")
        try:
            df = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p)
        except Exception as e:  # pandas / pyarrow raise many types for a broken file
            raise GrefelError(
                f"{p} cannot be read as a table ({type(e).__name__}): pass grefel predict's CSV or Parquet"
            ) from None
    missing = {"file", "frame", "face", "x1", "x2", "top_class"} - set(df.columns)
    if missing:
        raise GrefelError(
            f"the predictions table lacks {sorted(missing)}: write it with `grefel predict` on the videos"
        )
    return df


def video_frames(df) -> dict[str, int]:
    """Per video (file name without suffix): about how many frames it has, from the sampled frames
    `grefel predict` lists (every sampled frame has a row, with a face or without): the last one plus
    the sampling step."""
    out = {}
    for f, g in df[df["frame"].notna()].groupby("file"):
        frames = np.unique(g["frame"].to_numpy(np.int64))
        step = int(np.median(np.diff(frames))) if len(frames) > 1 else 1
        out[Path(f).stem] = int(frames[-1]) + max(step, 1)
    return out


def _check_length(ann: Path, labels: np.ndarray, frames: int | None) -> None:
    """An annotation with more lines than its video has frames (beyond a small slack) is another video's."""
    slack = max(2, round(0.02 * (frames or 0)))
    if frames is not None and len(labels) > frames + slack:
        raise DatasetError(
            f"{ann} labels {len(labels):,} frames, but the predictions of video {ann.stem} cover about {frames:,}: "
            "it is the annotation of another video, or the video was not read to its end"
        )


def _face_rows(rows, face: str):
    """One row per frame: the chosen face's."""
    if face == "largest":
        return rows.sort_values(["frame", "face"]).drop_duplicates("frame")
    centre = (rows["x1"] + rows["x2"]) / 2
    return (
        rows.assign(_c=centre).sort_values(["frame", "_c"], ascending=[True, face == "left"]).drop_duplicates("frame")
    )


@dataclass
class VideoScore:
    video: str
    frames: int  # annotated frames scored
    filled: int  # of them, without a prediction of their own (nearest predicted frame used)
    face: str
    f1: float
    accuracy: float


@dataclass
class AbawScore:
    classes: list[str]
    prediction: str  # the column scored
    f1: float  # macro F1 over all videos' frames pooled (the challenge's score)
    accuracy: float
    per_class_f1: dict[str, float | None]  # None: the class occurs in neither labels nor predictions
    frames: int
    filled: int
    videos: list[VideoScore] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # annotation files with no predictions


def _column(df, prediction: str) -> str:
    if prediction == "auto":
        has_smoothed = "smoothed_class" in df and df["smoothed_class"].notna().any()
        return "smoothed_class" if has_smoothed else "top_class"
    if prediction not in PREDICTION_COLUMNS:
        raise GrefelError(f"unknown prediction '{prediction}': choose auto, {', '.join(PREDICTION_COLUMNS)}")
    col = PREDICTION_COLUMNS[prediction]
    if col not in df or df[col].isna().all():
        raise GrefelError(f"the predictions table has no {col} values: predict with smoothing over frames first")
    return col


def _score_video(rows, labels: np.ndarray, col: str, index: dict[str, int], face: str):
    """(true labels, predicted labels, frames filled) for one video's annotated frames."""
    rows = _face_rows(rows, face)
    unknown = sorted(set(rows[col].str.lower()) - set(index))
    if unknown:
        raise GrefelError(
            f"predicted class(es) {unknown} are not among the annotation's classes {list(index)}: "
            "evaluate a model trained on these classes"
        )
    frames = rows["frame"].to_numpy(np.int64)
    pred = rows[col].str.lower().map(index).to_numpy(np.int64)
    want = np.flatnonzero(labels >= 0)  # frame index k - 1 for annotation line k
    pos = np.clip(np.searchsorted(frames, want), 0, len(frames) - 1)
    left = np.clip(pos - 1, 0, len(frames) - 1)
    nearest = np.where(np.abs(frames[left] - want) <= np.abs(frames[pos] - want), left, pos)
    return labels[want], pred[nearest], int((frames[nearest] != want).sum())


def evaluate_video(
    predictions, annotations: list[str | os.PathLike], *, prediction: str = "auto", face: str = "auto"
) -> AbawScore:
    """Score a `grefel predict` table (DataFrame or .csv / .parquet) against ABAW annotation files."""
    from sklearn.metrics import accuracy_score, f1_score

    if face not in FACE_CHOICES:
        raise GrefelError(f"unknown face choice '{face}': choose one of {', '.join(FACE_CHOICES)}")
    table = read_table(predictions)
    lengths = video_frames(table)
    df = table[table["frame"].notna() & table["top_class"].notna()]
    col = _column(df, prediction)
    by_video, files = {}, {}
    for f, g in df.groupby("file"):
        stem = Path(f).stem
        if stem in by_video:  # matched by name: two videos of one name cannot both be scored
            raise GrefelError(
                f"two videos named {stem} in the predictions ({files[stem]}, {f}): annotation files are matched by "
                "the video's name, so score them in separate runs"
            )
        by_video[stem], files[stem] = g, f
    classes, ys, ps, videos, unmatched = None, [], [], [], []
    for ann in annotation_files(annotations):
        names, labels = read_annotation(ann)
        if classes is not None and names != classes:
            raise DatasetError(f"{ann} names classes {names}, the other files {classes}: score one protocol at a time")
        classes = names
        rows = by_video.get(ann.stem)
        if rows is None:
            unmatched.append(str(ann))
            continue
        _check_length(ann, labels, lengths.get(ann.stem))
        side = face if face != "auto" else next((s for s in ("left", "right") if ann.stem.endswith(f"_{s}")), "largest")
        y, p, filled = _score_video(rows, labels, col, {c: i for i, c in enumerate(names)}, side)
        ys.append(y), ps.append(p)
        f1 = float(f1_score(y, p, average="macro", zero_division=0)) if len(y) else float("nan")
        acc = float(accuracy_score(y, p)) if len(y) else float("nan")
        videos.append(VideoScore(ann.stem, len(y), filled, side, f1, acc))
    if not videos:
        raise GrefelError(
            f"no predictions for any of the annotated videos ({', '.join(Path(u).stem for u in unmatched[:5])}): "
            "predictions are matched to annotation files by the video's name"
        )
    y, p = np.concatenate(ys), np.concatenate(ps)
    per = f1_score(y, p, labels=range(len(classes)), average=None, zero_division=0)
    present = set(y) | set(p)
    return AbawScore(
        classes=classes,
        prediction=col,
        f1=float(f1_score(y, p, average="macro", zero_division=0)),
        accuracy=float(accuracy_score(y, p)),
        per_class_f1={c: (float(per[i]) if i in present else None) for i, c in enumerate(classes)},
        frames=len(y),
        filled=sum(v.filled for v in videos),
        videos=videos,
        unmatched=unmatched,
    )
