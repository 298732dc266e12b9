"""Video in `grefel predict`: frames sampled, faces detected per frame, tracked and smoothed.

- Reading: OpenCV (``cv2.VideoCapture``; mp4, avi, mov, mkv and whatever its FFmpeg reads). Frames
  are sampled at ``fps`` per second of video time: frame k (time k / video rate) is kept when it
  is the first frame of a new 1 / fps interval; without ``fps`` every frame is kept. Frame
  indices start at 0. A file OpenCV cannot open, or that decodes no frame, is one error record; a
  video that stops decoding before the frame count its header states keeps the rows of the frames
  it did decode, plus one error record.
- Faces: the same aligner as images (:class:`grefel.inference.predict.Predictor`), on each sampled frame.
- Tracks: :class:`IoUTracker` gives each face the id of the live track whose last box overlaps it
  most (one-to-one, Hungarian assignment on IoU, at least ``min_iou``); a track unseen for more
  than ``max_missed`` sampled frames ends; new faces start new ids (0, 1, ... per video).
- Smoothing (``smooth`` = N > 1): each face's corrected distribution (eq. 19) is averaged with
  those of the same track over the track's last N sampled frames (a trailing mean: only past
  frames, as a live stream would); ``smoothed_class`` is its argmax.
- Rows: one per sampled frame and face; a sampled frame without a face gets one row with no face
  (so the frames that were looked at are all listed). The annotated copy, when asked for, is an
  MP4 (mp4v) at the sampled rate, written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from grefel.core.errors import GrefelError
from grefel.core.images import is_video
from grefel.core.io import regular_file
from grefel.inference.draw import annotate
from grefel.inference.records import Batch, FacePrediction, face_record

HELD_FRAMES = 16  # frames kept in memory at most while their faces wait for a forward pass


@contextlib.contextmanager
def _quiet_opencv():
    """Keep OpenCV's and FFmpeg's own messages about broken files off the terminal (we report one line)."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used
    old = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(old)


class VideoReader:
    """Sampled frames of one video: iterate for (frame index, time in s or None, uint8 RGB frame)."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        import cv2

        self.path = Path(path)
        if not self.path.exists():
            raise GrefelError("file not found")
        regular_file(path, "video")  # a folder, a FIFO (which would block the read): one line saying which
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise GrefelError("not a readable video (OpenCV cannot open it: corrupt, or a codec it lacks)")
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        self.rate = float(rate) if rate and math.isfinite(rate) and rate > 0 else None
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and math.isfinite(count) and count > 0 else None
        self.fps = fps if fps and self.rate and fps < self.rate else None  # None: every frame
        self.out_rate = self.fps or self.rate or 25.0
        self.decoded = 0

    @property
    def sampled_count(self) -> int | None:
        """About how many frames the iteration yields (from the header's frame count)."""
        if self.frame_count is None:
            return None
        return self.frame_count if self.fps is None else math.ceil(self.frame_count * self.fps / self.rate)

    def _wanted(self, k: int) -> bool:
        if self.fps is None:
            return True
        slot = math.floor(k * self.fps / self.rate + 1e-9)
        return k == 0 or slot > math.floor((k - 1) * self.fps / self.rate + 1e-9)

    def __iter__(self) -> Iterator[tuple[int, float | None, np.ndarray]]:
        import cv2

        k = 0
        try:
            with _quiet_opencv():
                while True:
                    want = self._wanted(k)
                    ok, bgr = self._cap.read() if want else (self._cap.grab(), None)
                    if not ok:
                        break
                    self.decoded += 1
                    if want:
                        yield k, (k / self.rate if self.rate else None), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    k += 1
        finally:
            self._cap.release()
        if self.decoded == 0:
            raise GrefelError("no frame could be decoded (an empty or corrupt video)")
        if self.frame_count and self.decoded < 0.98 * self.frame_count - 1:
            raise GrefelError(
                f"decoding stopped after {self.decoded} of {self.frame_count} frames (truncated or corrupt); "
                "the frames before it are kept"
            )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), x1 y1 x2 y2: (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class IoUTracker:
    """Face ids across frames by box overlap (see the module docstring)."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5):
        self.min_iou, self.max_missed = min_iou, max_missed
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}  # id -> (last box, frames missed since)
        self.next_id = 0

    def update(self, boxes: np.ndarray) -> list[int]:
        """The track id of each box of this frame (in order)."""
        from scipy.optimize import linear_sum_assignment

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes)
        live = list(self.tracks)
        if live and len(boxes):
            iou = box_iou(boxes, np.stack([self.tracks[t][0] for t in live]))
            for r, c in zip(*linear_sum_assignment(iou, maximize=True)):
                if iou[r, c] >= self.min_iou:
                    ids[r] = live[c]
        for i in range(len(boxes)):
            if ids[i] < 0:
                ids[i], self.next_id = self.next_id, self.next_id + 1
        for t in live:
            if t not in ids:
                box, missed = self.tracks.pop(t)
                if missed < self.max_missed:
                    self.tracks[t] = (box, missed + 1)
        for t, box in zip(ids, boxes):
            self.tracks[t] = (box, 0)
        return ids


class TrackSmoother:
    """Trailing mean of the corrected distribution over each track's last ``n`` sampled frames."""

    def __init__(self, n: int, classes: list[str]):
        self.n, self.classes = int(n), classes
        self.history: dict[int, deque] = {}

    def __call__(self, rec) -> None:
        if self.n <= 1 or rec.track is None or rec.top_class is None:
            return
        h = self.history.setdefault(rec.track, deque(maxlen=self.n))
        h.append(np.array([rec.corrected[c] for c in self.classes]))
        mean = np.mean(h, axis=0)
        k = int(mean.argmax())
        rec.smoothed = {c: float(v) for c, v in zip(self.classes, mean)}
        rec.smoothed_class, rec.smoothed_confidence = self.classes[k], float(mean[k])


class AnnotatedVideo:
    """An MP4 written frame by frame under a temporary name, renamed to ``path`` on :meth:`close`."""

    def __init__(self, path: Path, rate: float):
        self.path, self.rate = Path(path), rate
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.rate, (w, h))
            if not self._writer.isOpened():
                raise GrefelError(f"cannot write the annotated video {self.path}: OpenCV could not open an mp4v writer")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            os.replace(self.tmp, self.path)
            self._writer = None


def predict_video(
    predictor,
    path: Path,
    *,
    fps: float | None = None,
    smooth: int = 1,
    max_faces: int | None = None,
    batch_size: int = 32,
    annotated: Path | None = None,
    progress=None,
) -> list:
    """Records of every sampled frame and face of one video (:class:`grefel.inference.records.FacePrediction`)."""
    try:
        reader = VideoReader(path, fps)
    except GrefelError as e:
        return [FacePrediction(file=str(path), error=str(e))]
    tracker, smoother = IoUTracker(), TrackSmoother(smooth, predictor.classes)
    writer = AnnotatedVideo(annotated, reader.out_rate) if annotated is not None else None
    batch, results = Batch(predictor.classify, batch_size), []
    task = progress.add_task(path.name, total=reader.sampled_count) if progress is not None else None

    def finish(rgb, recs):
        for r in recs:
            smoother(r)
        if writer is not None:
            writer.write(annotate(rgb, recs, predictor.classes))

    try:
        for k, t, rgb in reader:
            faces = predictor.faces(rgb, max_faces)[:max_faces]
            ids = tracker.update(np.array([f.box for f in faces], np.float64).reshape(-1, 4))
            video = dict(frame=k, time=t)
            recs = [face_record(str(path), i, f, track=ids[i], **video) for i, f in enumerate(faces)]
            for rec, f in zip(recs, faces):
                batch.add(rec, f.image)
            results += recs or [FacePrediction(file=str(path), **video)]
            batch.then.append(lambda rgb=rgb, recs=recs: finish(rgb, recs))
            if len(batch.faces) >= batch.size or len(batch.then) >= HELD_FRAMES:
                batch.flush()
            if task is not None:
                progress.advance(task)
    except GrefelError as e:
        results.append(FacePrediction(file=str(path), error=str(e)))
    finally:
        batch.flush()
        if writer is not None:
            writer.close()
        if task is not None:
            progress.remove_task(task)
    return results


def video_summary(results: list) -> list[dict]:
    """Per video that decoded: frames sampled, frames with a face, faces, tracks, the most frequent class, errors."""
    out: dict[str, dict] = {}
    for r in results:
        if r.frame is None and not (r.error and is_video(r.file)):
            continue
        s = out.setdefault(
            r.file,
            dict(file=r.file, frames=set(), with_face=set(), faces=0, tracks=set(), classes=Counter(), errors=[]),
        )
        if r.error:
            s["errors"].append(r.error)
            continue
        s["frames"].add(r.frame)
        if r.top_class is not None:
            s["with_face"].add(r.frame)
            s["faces"] += 1
            s["tracks"].add(r.track)
            s["classes"][r.smoothed_class or r.top_class] += 1
    rows = []
    for s in out.values():
        if not s["frames"]:
            continue  # nothing decoded: its error line says why
        top = s["classes"].most_common(1)
        rows.append(
            dict(
                file=s["file"],
                frames=len(s["frames"]),
                frames_with_face=len(s["with_face"]),
                faces=s["faces"],
                tracks=len(s["tracks"]),
                top_class=top[0][0] if top else None,
                top_share=top[0][1] / s["faces"] if top else None,
                errors=s["errors"],
            )
        )
    return rows
