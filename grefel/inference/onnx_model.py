"""A model written by `grefel export` as a classifier of aligned faces, run by ONNX Runtime (no torch).

The file's metadata records the classes and the evaluation preset (stored face size, centre crop,
mean and std); :func:`preprocess` applies that preset in numpy, with the arithmetic of
:func:`grefel.data.transforms.eval_batch`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from grefel.core.devices import onnx_providers
from grefel.core.errors import CheckpointError
from grefel.inference.records import OUTPUTS


def preprocess(faces: np.ndarray, crop: int, mean, std) -> np.ndarray:
    """The evaluation preset in numpy: uint8 (N, H, W, 3) -> float32 (N, 3, crop, crop), normalised.

    Same arithmetic as :func:`grefel.data.transforms.eval_batch` (centre crop at integer offsets,
    /255, ImageNet mean/std); faces smaller than ``crop`` are first enlarged bilinearly.
    """
    x = np.asarray(faces)
    if x.ndim == 3:
        x = x[None]
    h, w = x.shape[1:3]
    x = x.astype(np.float32) / np.float32(255.0)
    if h < crop or w < crop:
        import cv2

        size = (max(w, crop), max(h, crop))
        x = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in x])
        h, w = x.shape[1:3]
    top, left = (h - crop) // 2, (w - crop) // 2
    x = x[:, top : top + crop, left : left + crop]
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def check_metadata(meta: dict[str, str], columns, side) -> tuple[list[str], int, int, list[float], list[float]]:
    """(classes, image size, crop, mean, std) from an exported model's metadata, checked: classes a
    list of unique strings, one per output column (``columns``, when the graph states it); image size
    and crop positive integers, crop at most the image size and equal to the graph's input side
    (``side``, when stated); mean three finite values in [0, 1] and std three finite positive values.
    ValueError saying which value is wrong."""
    missing = [k for k in ("classes", "image_size", "crop", "mean", "std") if k not in meta]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)} (not a model written by grefel export)")
    classes = _json(meta, "classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"'classes' must be a list of class names, got {meta['classes'][:40]!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"'classes' names a class twice ({classes})")
    if isinstance(columns, int) and len(classes) != columns:
        raise ValueError(f"'classes' names {len(classes)} classes for the model's {columns} output columns")
    size, crop = (_positive_int(meta, k) for k in ("image_size", "crop"))
    if crop > size:
        raise ValueError(f"crop {crop} is larger than image_size {size}")
    if isinstance(side, int) and crop != side:
        raise ValueError(f"crop {crop} differs from the model's {side} x {side} input")
    mean, std = _json(meta, "mean"), _json(meta, "std")
    for name, v, low in (("mean", mean, 0.0), ("std", std, None)):
        ok = (
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        )
        ok = ok and all(math.isfinite(x) for x in v)
        ok = ok and (all(0 <= x <= 1 for x in v) if low is not None else all(x > 0 for x in v))
        if not ok:
            want = "three values in [0, 1]" if low is not None else "three finite values above 0"
            raise ValueError(f"'{name}' must be {want} (one per RGB channel), got {meta[name][:40]!r}")
    return classes, size, crop, [float(x) for x in mean], [float(x) for x in std]


def _json(meta: dict[str, str], key: str):
    try:
        return json.loads(meta[key])
    except ValueError:
        raise ValueError(f"'{key}' is not JSON ({meta[key][:40]!r})") from None


def _positive_int(meta: dict[str, str], key: str) -> int:
    try:
        v = int(meta[key])
    except ValueError:
        raise ValueError(f"'{key}' must be a whole number, got {meta[key][:20]!r}") from None
    if v < 1:
        raise ValueError(f"'{key}' must be at least 1, got {v}")
    return v


class OnnxClassifier:
    """A model written by :func:`grefel.inference.export.export_onnx`, run by ONNX Runtime; torch is not imported."""

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, device: str | None = None, threads: int | None = None):
        self.path = str(path)
        if not Path(path).is_file():
            raise CheckpointError(f"ONNX model {path} not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        providers, self.aligner_device = onnx_providers(device)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path} cannot be loaded by ONNX Runtime ({reason}): write it again with `grefel export`"
            ) from None
        self._read_metadata(self.session.get_modelmeta().custom_metadata_map)

    def _read_metadata(self, meta: dict[str, str]) -> None:
        """The metadata of `grefel export`, each value checked against the graph before any face is
        classified (:func:`check_metadata`): a one-line CheckpointError otherwise."""
        names = [o.name for o in self.session.get_outputs()]
        if names[: len(OUTPUTS)] != list(OUTPUTS):
            raise CheckpointError(
                f"{self.path} has outputs {names}, not {list(OUTPUTS)}: export it with `grefel export`"
            )
        columns = self.session.get_outputs()[0].shape[-1]
        side = self.session.get_inputs()[0].shape[-1]
        try:
            self.classes, self.size, self.crop, self.mean, self.std = check_metadata(meta, columns, side)
        except ValueError as e:
            raise CheckpointError(
                f"{self.path}: metadata {e}: export the checkpoint again with `grefel export`"
            ) from None
        self.metadata = dict(meta)

    def run(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        x = preprocess(faces, self.crop, self.mean, self.std)
        out = self.session.run(list(OUTPUTS), {self.session.get_inputs()[0].name: x})
        return dict(zip(OUTPUTS, out))
