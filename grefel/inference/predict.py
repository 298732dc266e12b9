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

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from grefel.core.errors import GrefelError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
ALIGN_CHOICES = ("retinaface-onnx", "facexlib-resnet50", "facexlib-mobile0.25", "none")


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


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named directly (whatever their suffix) plus images and videos found under named folders, sorted."""
    from grefel.inference.video import VIDEO_SUFFIXES

    wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in wanted))
        else:
            out.append(p)  # missing files become error records, not a crash
    return out


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB (H, W, 3), EXIF orientation applied; GrefelError with the reason otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise GrefelError("file not found")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GrefelError(f"not a readable image ({type(e).__name__}: {str(e)[:80]})") from None


class Batch:
    """Faces waiting for one forward pass, and what to do once they are classified (in order)."""

    def __init__(self, predictor: Predictor, size: int):
        self.predictor, self.size = predictor, max(1, int(size))
        self.faces: list[tuple[FacePrediction, np.ndarray]] = []
        self.then: list[Callable[[], None]] = []

    def add(self, rec: FacePrediction, image: np.ndarray) -> None:
        self.faces.append((rec, image))

    def flush(self) -> None:
        if self.faces:
            self.predictor.classify(self.faces)
            self.faces = []
        todo, self.then = self.then, []
        for fn in todo:
            fn()


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
        from grefel.inference.classifier import open_classifier

        if align not in ALIGN_CHOICES:
            raise GrefelError(f"unknown face aligner '{align}': choose one of {', '.join(ALIGN_CHOICES)}")
        self.align, self.weights_dir = align, weights_dir
        self.classifier = open_classifier(model, device)
        self.classes: list[str] = list(self.classifier.classes)
        self._aligner = None

    @property
    def aligner(self):
        """The face detector + aligner, created on first use (None with ``align="none"``)."""
        if self._aligner is None and self.align != "none":
            from grefel.data.align import FaceAligner

            c = self.classifier
            self._aligner = FaceAligner(self.align, weights_dir=self.weights_dir, size=c.size, device=c.aligner_device)
        return self._aligner

    def faces(self, rgb: np.ndarray, max_faces: int | None = None) -> list:
        """Aligned faces of one image or frame (:class:`grefel.data.align.AlignedFace`), largest first."""
        from grefel.data import align as A

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

        from grefel.inference.video import is_video, predict_video

        files = find_inputs(inputs)
        if not files:
            raise GrefelError(f"no images or videos found in {', '.join(str(i) for i in inputs)}")
        out_dir = writable_folder(save_annotated) if save_annotated is not None else None
        names = _unique_names(files)
        results: list[FacePrediction] = []
        batch = Batch(self, batch_size)
        with Progress(transient=True, disable=not show_progress) as progress:
            task = progress.add_task("predict", total=len(files))
            for f in files:
                if is_video(f):
                    annotated = out_dir / f"{names[f]}.annotated.mp4" if out_dir else None
                    kw = dict(fps=fps, smooth=smooth, max_faces=max_faces, annotated=annotated, progress=progress)
                    results += predict_video(self, f, batch_size=batch_size, **kw)
                else:
                    annotated = out_dir / f"{names[f]}.annotated.png" if out_dir else None
                    results += self._image(f, batch, max_faces, annotated)
                if len(batch.faces) >= batch.size:
                    batch.flush()
                progress.advance(task)
            batch.flush()
        return results

    def _image(self, f: Path, batch: Batch, max_faces: int | None, annotated: Path | None) -> list[FacePrediction]:
        """Records of one image file (faces queued on ``batch``), or one error record."""
        try:
            rgb = read_rgb(f)
            faces = self.faces(rgb, max_faces)
            if not faces:
                raise GrefelError(
                    f"no face found (detector {self.align}): try another align setting, 'none' for pre-cropped faces"
                )
        except GrefelError as e:
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
        from grefel.data.align import resize_square

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


def face_record(file: str, k: int, face, **video) -> FacePrediction:
    """The record of detected face ``k`` (box and score from the aligner; classes filled later)."""
    box = None if face.box is None else [float(v) for v in face.box]
    score = None if np.isnan(face.score) else float(face.score)
    return FacePrediction(file=file, face=k, box=box, score=score, **video)


def writable_folder(path: str | os.PathLike) -> Path:
    """``path`` created as a folder, checked writable now (before any work), else a one-line error."""
    import tempfile

    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".grefel-write-test."):
            pass
    except OSError as e:
        raise GrefelError(
            f"cannot write annotated copies to {out} ({e.strerror or type(e).__name__}): choose a writable folder"
        ) from None
    return out


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


def annotate(rgb: np.ndarray, recs: Iterable[FacePrediction], classes: list[str]) -> np.ndarray:
    """``rgb`` with each face's box and "class prob (primary: class)" drawn in the class colour.

    Video faces show their track first ("#2 joy 0.81") and, when smoothed, the smoothed class.
    """
    from PIL import Image, ImageDraw, ImageFont

    from grefel.report.figures import class_palette

    colors = {c: tuple(int(255 * v) for v in rgb_) for c, rgb_ in zip(classes, class_palette(classes))}
    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 300))
    try:
        font = ImageFont.load_default(size=max(12, round(max(im.size) / 40)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for r in recs:
        if r.box is None or r.top_class is None:
            continue
        cls, conf = (r.smoothed_class, r.smoothed_confidence) if r.smoothed_class else (r.top_class, r.confidence)
        col = colors[cls]
        x1, y1, x2, y2 = r.box
        d.rectangle([x1, y1, x2, y2], outline=col, width=width)
        text = ("" if r.track is None else f"#{r.track} ") + f"{cls} {conf:.2f}"
        text += f" (primary: {r.primary_class})" if r.changed and not r.smoothed_class else ""
        tb = d.textbbox((x1, y1), text, font=font)
        th = tb[3] - tb[1]
        ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
        d.rectangle([x1, ty, x1 + (tb[2] - tb[0]) + 2 * width, ty + th + 2 * width], fill=col)
        d.text((x1 + width, ty + width - (tb[1] - y1)), text, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def draw_annotations(rgb: np.ndarray, recs: Iterable[FacePrediction], classes: list[str], path: Path) -> Path:
    """Save :func:`annotate`'s picture as PNG at ``path`` (atomically)."""
    from PIL import Image

    from grefel.core.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(annotate(rgb, recs, classes)).save(tmp, format="PNG")
    return path


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
