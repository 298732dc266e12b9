"""Pictures of predictions: each face's box and classes drawn in its class colour (``--save-annotated``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from grefel.core.io import atomic_path
from grefel.inference.records import FacePrediction


def class_palette(classes: Sequence[str]) -> list:
    """One colour per class, in class order; the same classes always get the same colours (annotated
    images and report figures)."""
    import seaborn as sns  # lazy: seaborn loads matplotlib, which only drawing needs

    n = len(classes)
    return sns.color_palette("colorblind", n) if n <= 10 else sns.color_palette("husl", n)


def annotate(rgb: np.ndarray, recs: Iterable[FacePrediction], classes: list[str]) -> np.ndarray:
    """``rgb`` with each face's box and "class prob (primary: class)" drawn in the class colour.

    Video faces show their track first ("#2 joy 0.81") and, when smoothed, the smoothed class.
    """
    from PIL import Image, ImageDraw, ImageFont

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

    with atomic_path(path) as tmp:
        Image.fromarray(annotate(rgb, recs, classes)).save(tmp, format="PNG")
    return path
