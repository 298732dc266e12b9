"""What inference produces: the arrays every classifier returns, and one record per face.

Every classifier (:mod:`grefel.inference.torch_model`, :mod:`grefel.inference.onnx_model`) maps
aligned uint8 faces (N, S, S, 3) to float32 arrays named :data:`OUTPUTS`: ``primary`` (eq. 9),
``corrected`` (eq. 19), each (N, C), and the ``embedding`` e (N, D). `grefel predict` turns them
into :class:`FacePrediction` records, and :func:`records_frame` into rows (``--csv``, the API).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

OUTPUTS = ("primary", "corrected", "embedding")


@dataclass
class FacePrediction:
    """One face (or, with ``error`` set, one file that produced none; for a video, also one frame without a face)."""

    file: str
    frame: int | None = None  # video frame index, 0 = first frame (None for images)
    time: float | None = None  # seconds from the video's start (frame / frame rate)
    track: int | None = None  # face track within the video (IoU tracker): the same person keeps it
    face: int | None = None  # 0 = largest face in the image / frame
    box: list[float] | None = None  # x1, y1, x2, y2 in image pixels
    score: float | None = None  # detector confidence
    top_class: str | None = None  # argmax of the corrected distribution (eq. 19)
    confidence: float | None = None  # its probability
    primary_class: str | None = None  # argmax of the primary distribution (eq. 9)
    primary_confidence: float | None = None
    changed: bool | None = None  # reliability balancing changed the top class
    corrected: dict[str, float] = field(default_factory=dict)
    primary: dict[str, float] = field(default_factory=dict)
    smoothed: dict[str, float] = field(default_factory=dict)  # corrected, averaged over the track's last frames
    smoothed_class: str | None = None
    smoothed_confidence: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Batch:
    """Faces waiting for one forward pass, and what to do once they are classified (in order)."""

    def __init__(self, classify: Callable[[list[tuple[FacePrediction, np.ndarray]]], None], size: int):
        self.classify, self.size = classify, max(1, int(size))
        self.faces: list[tuple[FacePrediction, np.ndarray]] = []
        self.then: list[Callable[[], None]] = []

    def add(self, rec: FacePrediction, image: np.ndarray) -> None:
        self.faces.append((rec, image))

    def flush(self) -> None:
        if self.faces:
            self.classify(self.faces)
            self.faces = []
        todo, self.then = self.then, []
        for fn in todo:
            fn()


def face_record(file: str, k: int, face, **video) -> FacePrediction:
    """The record of detected face ``k`` (box and score from the aligner; classes filled later)."""
    box = None if face.box is None else [float(v) for v in face.box]
    score = None if np.isnan(face.score) else float(face.score)
    return FacePrediction(file=file, face=k, box=box, score=score, **video)


def records_frame(results: list[FacePrediction], classes: Sequence[str] | None = None):
    """One pandas row per record: file, frame, time, track, face, box (x1..y2), score, the top classes
    and confidences, changed, error, then ``p_<class>`` (corrected), ``primary_p_<class>`` and, when
    smoothed, ``smoothed_class``, ``smoothed_confidence`` and ``smoothed_p_<class>``."""
    import pandas as pd

    classes = list(classes or next((list(r.corrected) for r in results if r.corrected), []))
    smoothed = any(r.smoothed for r in results)
    rows = []
    for r in results:
        box = r.box or [None] * 4
        row = {k: getattr(r, k) for k in ("file", "frame", "time", "track", "face")}
        row.update(zip(("x1", "y1", "x2", "y2"), box))
        for k in ("score", "top_class", "confidence", "primary_class", "primary_confidence", "changed"):
            row[k] = getattr(r, k)
        if smoothed:
            row.update(smoothed_class=r.smoothed_class, smoothed_confidence=r.smoothed_confidence)
        row["error"] = r.error
        row.update({f"p_{c}": r.corrected.get(c) for c in classes})
        row.update({f"primary_p_{c}": r.primary.get(c) for c in classes})
        if smoothed:
            row.update({f"smoothed_p_{c}": r.smoothed.get(c) for c in classes})
        rows.append(row)
    df = pd.DataFrame(rows)
    dtypes = {"frame": "Int64", "track": "Int64", "face": "Int64", "changed": "boolean"}
    return df.astype({k: v for k, v in dtypes.items() if k in df}) if len(df) else df
