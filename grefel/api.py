"""The Python API: ``grefel.load(path)`` -> :class:`Model`, as short as py-feat's.

Example::

    import grefel
    model = grefel.load("runs/x/best.pt")            # or an exported model.onnx
    df = model.predict(["a.jpg", "clip.mp4"])        # pandas DataFrame, one row per face (per frame)
    df = model.predict_faces(faces)                  # already-aligned uint8 faces (N, H, W, 3)

It runs :class:`grefel.inference.predict.Predictor`, the code `grefel predict` runs; the rows are those of
`grefel predict --csv` (:func:`grefel.inference.predict.records_frame`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from grefel.inference.predict import Predictor
from grefel.inference.records import records_frame


class Model(Predictor):
    """A trained GReFEL model with its face aligner (see :class:`grefel.inference.predict.Predictor` for ``align``)."""

    @property
    def backend(self) -> str:
        """ "torch" (a checkpoint) or "onnx" (an exported model, run by ONNX Runtime)."""
        return self.classifier.backend

    def __repr__(self) -> str:
        return f"grefel.Model({self.classifier.path!r}, backend={self.backend!r}, classes={self.classes})"

    def predict(
        self,
        inputs: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        fps: float | None = None,
        smooth: int = 1,
        max_faces: int | None = None,
        batch_size: int = 32,
        save_annotated: str | os.PathLike | None = None,
        progress: bool = False,
    ):
        """Every face in image and video files (and folders of them): a DataFrame, one row per face.

        Video rows carry ``frame``, ``time`` and ``track``; ``fps`` samples videos (default: every
        frame), ``smooth`` > 1 adds ``smoothed_*`` columns (trailing mean over a track's last
        ``smooth`` frames). A file that fails is one row with ``error`` set; the rest go on.
        """
        recs = self.run(
            inputs,
            fps=fps,
            smooth=smooth,
            max_faces=max_faces,
            batch_size=batch_size,
            save_annotated=save_annotated,
            show_progress=progress,
        )
        return records_frame(recs, self.classes)

    def predict_faces(self, faces, *, batch_size: int = 32):
        """Already-aligned faces, uint8 (N, H, W, 3) (numpy or torch; resized to the model's face size
        when different): a DataFrame with one row per face, in order."""
        return records_frame(self.classify_faces(faces, batch_size), self.classes)


def load(
    path: str | os.PathLike,
    *,
    align: str = "retinaface-onnx",
    weights_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> Model:
    """A `grefel train` checkpoint (``.pt``) or a `grefel export` model (``.onnx``) ready to predict."""
    return Model(path, align=align, weights_dir=weights_dir, device=device)
