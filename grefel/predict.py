"""`grefel predict`: classify the faces in photographs with a trained checkpoint.

Each image goes through the same face aligner as ``grefel prepare`` (detect, five points, similarity
warp to the template at the stored size), then the evaluation preset and the model. Every face gets
its primary prediction (eq. 9) and its corrected prediction after reliability balancing (eq. 19).
A file that cannot be read or holds no face becomes one error record; the other files go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from grefel.errors import CheckpointError, GrefelError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
ALIGN_CHOICES = ("retinaface-onnx", "facexlib-resnet50", "facexlib-mobile0.25", "none")


@dataclass
class FacePrediction:
    """One face (or, with ``error`` set, one file that produced none)."""

    file: str
    face: int | None = None  # 0 = largest face in the image
    box: list[float] | None = None  # x1, y1, x2, y2 in image pixels
    score: float | None = None  # detector confidence
    top_class: str | None = None  # argmax of the corrected distribution (eq. 19)
    confidence: float | None = None  # its probability
    primary_class: str | None = None  # argmax of the primary distribution (eq. 9)
    primary_confidence: float | None = None
    changed: bool | None = None  # reliability balancing changed the top class
    corrected: dict[str, float] = field(default_factory=dict)
    primary: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def find_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named directly (whatever their suffix) plus image files found under named folders, sorted."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
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


def _image_size(payload: dict) -> int:
    """Stored face size of the training data (manifest, when still on disk), else 128."""
    path = (payload.get("dataset") or {}).get("path")
    if path and (Path(path) / "manifest.json").is_file():
        from grefel.io import read_json

        return int(read_json(Path(path) / "manifest.json").get("image_size", 128))
    return 128


def load_classifier(ckpt: str | os.PathLike, device=None):
    """(model, classes, stored face size, device, evaluation crop) of a checkpoint; clear errors for unusable ones."""
    import torch

    from grefel.checkpoint import load_checkpoint
    from grefel.evaluate import default_device, eval_crop, model_from_checkpoint

    payload = load_checkpoint(ckpt)
    classes = list((payload.get("dataset") or {}).get("classes") or [])
    n = (payload.get("model_config") or {}).get("num_classes")
    if not classes:
        raise CheckpointError(f"{ckpt} does not record its class names: pass a checkpoint written by `grefel train`")
    if n is not None and int(n) != len(classes):
        raise CheckpointError(
            f"{ckpt} has a {n}-class head but records {len(classes)} classes ({', '.join(classes)}): "
            "the file is inconsistent; use the run's best.pt"
        )
    dev = torch.device(device) if device is not None else default_device()
    return model_from_checkpoint(payload, dev, ckpt), classes, _image_size(payload), dev, eval_crop(payload)


def predict(
    ckpt: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    *,
    align: str = "retinaface-onnx",
    weights_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 32,
    max_faces: int | None = None,
    save_annotated: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> tuple[list[FacePrediction], list[str]]:
    """Classify every face in ``inputs`` (files and folders); return (per-face records, classes).

    ``align``: a :class:`grefel.data.align.FaceAligner` detector, or ``none`` for images that are
    already aligned faces. ``save_annotated``: folder for copies with boxes and labels drawn.
    """
    if align not in ALIGN_CHOICES:
        raise GrefelError(f"unknown --align '{align}': choose one of {', '.join(ALIGN_CHOICES)}")
    files = find_images(inputs)
    if not files:
        raise GrefelError(
            "no images found in "
            + ", ".join(str(i) for i in inputs)
            + f" (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    model, classes, size, dev, crop = load_classifier(ckpt, device)
    from grefel.data import align as A

    aligner = (
        None
        if align == "none"
        else A.FaceAligner(align, weights_dir=weights_dir, size=size, device=str(dev) if dev.type == "cuda" else "cpu")
    )

    from rich.progress import Progress

    results: list[FacePrediction] = []
    pending: list[tuple[FacePrediction, np.ndarray]] = []
    annotate: dict[Path, tuple[np.ndarray, list[FacePrediction]]] = {}

    def flush():
        if pending:
            _classify(model, dev, classes, pending, crop)
            pending.clear()

    with Progress(transient=True, disable=not show_progress) as progress:
        task = progress.add_task("predict", total=len(files))
        for f in files:
            try:
                rgb = read_rgb(f)
                if aligner is None:  # already a face: the centred square of the image
                    h, w = rgb.shape[:2]
                    side = min(h, w)
                    faces = [
                        A.resize_square(
                            rgb, size, np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2])
                        )
                    ]
                else:
                    faces = aligner.align(rgb)
                if not faces:
                    raise GrefelError(
                        f"no face found (detector {align}); try another --align, or --align none for pre-cropped faces"
                    )
            except GrefelError as e:
                results.append(FacePrediction(file=str(f), error=str(e)))
                progress.advance(task)
                continue
            recs = []
            for k, face in enumerate(faces[:max_faces] if max_faces else faces):
                box = None if face.box is None else [float(v) for v in face.box]
                rec = FacePrediction(
                    file=str(f), face=k, box=box, score=None if np.isnan(face.score) else float(face.score)
                )
                results.append(rec)
                recs.append(rec)
                pending.append((rec, face.image))
            if save_annotated is not None:
                annotate[f] = (rgb, recs)
            if len(pending) >= batch_size:
                flush()
            progress.advance(task)
        flush()

    if save_annotated is not None:
        out = Path(save_annotated)
        names = _unique_names(list(annotate))
        for f, (rgb, recs) in annotate.items():
            draw_annotations(rgb, recs, classes, out / names[f])
    return results, classes


def _classify(model, device, classes: list[str], pending: list[tuple[FacePrediction, np.ndarray]], crop: int) -> None:
    from grefel.evaluate import run_model

    out = run_model(model, np.stack([img for _, img in pending]), device, crop=crop)
    for (rec, _), prim, corr in zip(pending, out["primary"], out["corrected"]):
        p, c = int(prim.argmax()), int(corr.argmax())
        rec.top_class, rec.confidence = classes[c], float(corr[c])
        rec.primary_class, rec.primary_confidence = classes[p], float(prim[p])
        rec.changed = p != c
        rec.corrected = {k: float(v) for k, v in zip(classes, corr)}
        rec.primary = {k: float(v) for k, v in zip(classes, prim)}


def _unique_names(files: list[Path]) -> dict[Path, str]:
    """``<stem>.annotated.png`` per input, numbered when two inputs share a stem."""
    seen: dict[str, int] = {}
    out = {}
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        out[f] = f"{f.stem}{'' if n == 0 else f'-{n}'}.annotated.png"
    return out


def draw_annotations(rgb: np.ndarray, recs: Iterable[FacePrediction], classes: list[str], path: Path) -> Path:
    """Save ``rgb`` with each face's box and "class prob (primary: class)" drawn in the class colour."""
    from PIL import Image, ImageDraw, ImageFont

    from grefel.io import atomic_path
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
        col = colors[r.top_class]
        x1, y1, x2, y2 = r.box
        d.rectangle([x1, y1, x2, y2], outline=col, width=width)
        text = f"{r.top_class} {r.confidence:.2f}" + (f" (primary: {r.primary_class})" if r.changed else "")
        tb = d.textbbox((x1, y1), text, font=font)
        th = tb[3] - tb[1]
        ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
        d.rectangle([x1, ty, x1 + (tb[2] - tb[0]) + 2 * width, ty + th + 2 * width], fill=col)
        d.text((x1 + width, ty + width - (tb[1] - y1)), text, fill=(0, 0, 0), font=font)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def records_table(results: list[FacePrediction]) -> list[dict]:
    """Flat rows (file, face, box, top class, confidence, primary class, primary confidence, changed, error) for CSV."""
    rows = []
    for r in results:
        rows.append(
            {
                "file": r.file,
                "face": r.face,
                "box": "" if r.box is None else " ".join(f"{v:.1f}" for v in r.box),
                "score": r.score,
                "top_class": r.top_class,
                "confidence": r.confidence,
                "primary_class": r.primary_class,
                "primary_confidence": r.primary_confidence,
                "changed": r.changed,
                "error": r.error or "",
                **{f"p_{k}": v for k, v in r.corrected.items()},
            }
        )
    return rows
