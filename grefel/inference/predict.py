"""`grefel predict`: classify the faces in photographs and videos with a trained model.

The model is a `grefel train` checkpoint (run by PyTorch) or a `grefel export` ONNX file (run by
ONNX Runtime, torch not imported): :mod:`grefel.inference.classifier`. Each image, and each sampled video
frame (:mod:`grefel.inference.video`), goes through the same face aligner as ``grefel prepare`` (detect, five
points, similarity warp to the template at the stored size), then the evaluation preset and the
model. Every face gets its primary prediction (eq. 9) and its corrected prediction after
reliability balancing (eq. 19). A file that cannot be read, or an image that holds no face,
becomes one error record; the other files go on.

:class:`Predictor` is what both the CLI and the Python API (:func:`grefel.load`) run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grefel.core.errors import GrefelError
from grefel.core.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageError, is_video, read_image
from grefel.core.io import regular_file, same_file, writable_dir, writable_file
from grefel.data import align as A
from grefel.data.align import DETECTORS, FACEXLIB_NETWORKS, FaceAligner, resize_square
from grefel.inference.classifier import open_classifier
from grefel.inference.draw import draw_annotations
from grefel.inference.records import Batch, FacePrediction, face_record
from grefel.inference.video import predict_video
from grefel.weights.store import detector_weights

PREDICT_ALIGNERS = (*DETECTORS, "none")


def input_paths(inputs) -> list[str | os.PathLike]:
    """``inputs`` as a list of paths: one path, or a list of them. Anything else (an array of faces, a
    number, None) is a one-line GrefelError saying what to pass."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if isinstance(inputs, np.ndarray) or hasattr(inputs, "detach"):
        raise GrefelError(
            "predict takes image and video files (paths); for faces already in memory (an array), "
            "use predict_faces(faces)"
        )
    if isinstance(inputs, (list, tuple)) and all(isinstance(i, (str, os.PathLike)) for i in inputs):
        return list(inputs)
    got = type(inputs).__name__ if not isinstance(inputs, (list, tuple)) else "a list holding other things"
    raise GrefelError(f"predict takes a path or a list of paths (files and folders), got {got}")


def check_run_options(fps=None, smooth: int = 1, max_faces: int | None = None, batch_size: int = 32) -> None:
    """The options of :meth:`Predictor.run` in the ranges `grefel predict` allows: a one-line GrefelError."""

    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < math.inf):
        raise GrefelError(f"fps must be a number of frames per second above 0, or None for every frame (got {fps!r})")
    for name, v, optional in (
        ("smooth", smooth, False),
        ("max_faces", max_faces, True),
        ("batch_size", batch_size, False),
    ):
        if not (optional and v is None) and not (whole(v) and v >= 1):
            raise GrefelError(
                f"{name} must be a whole number of at least 1{' or None' if optional else ''} (got {v!r})"
            )


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named directly (whatever their suffix) plus images and videos found under named folders, sorted."""
    wanted = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    out: list[Path] = []
    for item in input_paths(inputs):
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in wanted))
        else:
            out.append(p)  # missing files become error records, not a crash
    return out


def check_outputs(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    outputs: dict[str, str | os.PathLike | None],
    save_annotated: str | os.PathLike | None = None,
) -> None:
    """Before any work: every output file of a prediction (``outputs``: what it is -> path; None and
    ``-``, standard output, are skipped) checked by :func:`grefel.core.io.writable_file` against the model
    and every input file, and against each other; the folder of annotated copies checked to be
    writable, and none of its copies to be an input. A one-line GrefelError otherwise."""
    files = find_inputs(inputs)
    given = [model, *files]
    seen: dict[Path, str] = {}
    for what, path in outputs.items():
        if path is None or str(path) == "-":
            continue
        out = writable_file(path, what, inputs=given)
        twin = next((w for p, w in seen.items() if same_file(p, out)), None)
        if twin:
            raise GrefelError(f"the {what} and the {twin} are one file ({out}): give each its own path")
        seen[out] = what
    if save_annotated is not None:
        out_dir = writable_dir(save_annotated, "folder for annotated copies")
        _annotated_paths(files, out_dir)


def _annotated_paths(files: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Where each input's annotated copy goes; a one-line GrefelError when one of them is an input."""
    names = _unique_names(files)
    out = {f: out_dir / f"{names[f]}.annotated.{'mp4' if is_video(f) else 'png'}" for f in files}
    for f, a in out.items():
        hit = next((g for g in files if same_file(a, g)), None)
        if hit is not None:
            raise GrefelError(
                f"the annotated copy of {f} would be written over the input {hit}: choose another folder for "
                "annotated copies"
            )
    return out


class Predictor:
    """A model (checkpoint or ``.onnx``) with its face aligner: what `grefel predict` and :func:`grefel.load` run.

    ``align``: a :class:`grefel.data.align.FaceAligner` detector, or ``none`` for inputs that are
    already aligned faces (each image / frame is classified as one face, its centred square).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        align: str = "retinaface-onnx",
        weights_dir: str | os.PathLike | None = None,
        device: str | None = None,
    ):

        if align not in PREDICT_ALIGNERS:
            raise GrefelError(f"unknown face aligner '{align}': choose one of {', '.join(PREDICT_ALIGNERS)}")
        self.align, self.weights_dir = align, weights_dir
        self.classifier = open_classifier(model, device)
        self.classes: list[str] = list(self.classifier.classes)
        self._aligner = None

    @property
    def aligner(self):
        """The face detector + aligner, created on first use (None with ``align="none"``)."""
        if self._aligner is None and self.align != "none":
            c = self.classifier
            path, sha = (
                detector_weights(self.align, self.weights_dir) if self.align in FACEXLIB_NETWORKS else (None, None)
            )
            self._aligner = FaceAligner(self.align, path, size=c.size, device=c.aligner_device, weights_sha256=sha)
        return self._aligner

    def faces(self, rgb: np.ndarray, max_faces: int | None = None) -> list:
        """Aligned faces of one image or frame (:class:`grefel.data.align.AlignedFace`), largest first."""

        if self.align == "none":  # already a face: the centred square of the image
            h, w = rgb.shape[:2]
            side = min(h, w)
            box = np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2])
            return [A.resize_square(rgb, self.classifier.size, box)]
        return self.aligner.align(rgb, max_faces=max_faces)

    def classify(self, pending: list[tuple[FacePrediction, np.ndarray]]) -> None:
        """Fill the class fields of each record from one forward pass over its aligned face."""
        classes = self.classes
        out = self.classifier.run(np.stack([img for _, img in pending]))
        for (rec, _), prim, corr in zip(pending, out["primary"], out["corrected"]):
            p, c = int(prim.argmax()), int(corr.argmax())
            rec.top_class, rec.confidence = classes[c], float(corr[c])
            rec.primary_class, rec.primary_confidence = classes[p], float(prim[p])
            rec.changed = p != c
            rec.corrected = {k: float(v) for k, v in zip(classes, corr)}
            rec.primary = {k: float(v) for k, v in zip(classes, prim)}

    def run(
        self,
        inputs: Sequence[str | os.PathLike],
        *,
        fps: float | None = None,
        smooth: int = 1,
        max_faces: int | None = None,
        batch_size: int = 32,
        save_annotated: str | os.PathLike | None = None,
        show_progress: bool = True,
    ) -> list[FacePrediction]:
        """Classify every face in ``inputs`` (image and video files, folders): one record per face.

        Videos: frames sampled at ``fps`` per second (None: every frame), faces tracked, the
        corrected distribution averaged over each track's last ``smooth`` sampled frames
        (:func:`grefel.inference.video.predict_video`). ``save_annotated``: folder for copies with boxes and
        labels drawn (``<stem>.annotated.png`` per image, ``<stem>.annotated.mp4`` per video).
        """
        from rich.progress import Progress

        check_run_options(fps, smooth, max_faces, batch_size)
        files = find_inputs(inputs)
        if not files:
            raise GrefelError(f"no images or videos found in {', '.join(str(i) for i in inputs)}")
        out_dir = writable_dir(save_annotated, "folder for annotated copies") if save_annotated is not None else None
        annotated = _annotated_paths(files, out_dir) if out_dir is not None else {}
        results: list[FacePrediction] = []
        batch = Batch(self.classify, batch_size)
        with Progress(transient=True, disable=not show_progress) as progress:
            task = progress.add_task("predict", total=len(files))
            for f in files:
                if is_video(f):
                    kw = dict(
                        fps=fps, smooth=smooth, max_faces=max_faces, annotated=annotated.get(f), progress=progress
                    )
                    results += predict_video(self, f, batch_size=batch_size, **kw)
                else:
                    results += self._image(f, batch, max_faces, annotated.get(f))
                if len(batch.faces) >= batch.size:
                    batch.flush()
                progress.advance(task)
            batch.flush()
        return results

    def _image(self, f: Path, batch: Batch, max_faces: int | None, annotated: Path | None) -> list[FacePrediction]:
        """Records of one image file (faces queued on ``batch``), or one error record."""
        try:
            rgb = read_image(regular_file(f, "input"), exif=True)  # a FIFO would block the read forever
            faces = self.faces(rgb, max_faces)
            if not faces:
                raise GrefelError(
                    f"no face found (detector {self.align}): try another align setting, 'none' for pre-cropped faces"
                )
        except (GrefelError, ImageError) as e:
            return [FacePrediction(file=str(f), error=str(e))]
        recs = [face_record(str(f), k, face) for k, face in enumerate(faces[:max_faces] if max_faces else faces)]
        for rec, face in zip(recs, faces):
            batch.add(rec, face.image)
        if annotated is not None:
            batch.then.append(lambda: draw_annotations(rgb, recs, self.classes, annotated))
        return recs

    def classify_faces(self, faces, batch_size: int = 32) -> list[FacePrediction]:
        """Already-aligned faces, uint8 (N, H, W, 3) numpy array or tensor (or one (H, W, 3) face).

        Faces of another size than the model's stored size are resized to it, as ``align="none"`` does.
        """

        arr = faces.detach().cpu().numpy() if hasattr(faces, "detach") else np.asarray(faces)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise GrefelError(f"expected uint8 faces of shape (N, H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
        size = self.classifier.size
        recs = [FacePrediction(file="", face=k) for k in range(len(arr))]
        for start in range(0, len(arr), max(1, batch_size)):
            chunk = arr[start : start + batch_size]
            imgs = chunk if chunk.shape[1:3] == (size, size) else [resize_square(im, size).image for im in chunk]
            self.classify(list(zip(recs[start : start + batch_size], imgs)))
        return recs


def predict(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    *,
    align: str = "retinaface-onnx",
    weights_dir: str | os.PathLike | None = None,
    device: str | None = None,
    **options,
) -> tuple[list[FacePrediction], list[str]]:
    """Classify every face in ``inputs`` with ``model`` (a checkpoint or an ``.onnx`` file); return
    (per-face records, classes). ``options``: those of :meth:`Predictor.run` (``fps``, ``smooth``,
    ``max_faces``, ``batch_size``, ``save_annotated``, ``show_progress``)."""
    p = Predictor(model, align=align, weights_dir=weights_dir, device=device)
    return p.run(inputs, **options), p.classes


def _unique_names(files: list[Path]) -> dict[Path, str]:
    """The stem of each input's annotated copy, numbered when two inputs share a stem."""
    seen: dict[str, int] = {}
    out = {}
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        out[f] = f.stem if n == 0 else f"{f.stem}-{n}"
    return out
