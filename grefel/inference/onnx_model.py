"""A model written by `grefel export` as a classifier of aligned faces, run by ONNX Runtime (no torch).

The file's metadata records the classes and the evaluation preset (stored face size, centre crop,
mean and std); :func:`preprocess` applies that preset in numpy, with the arithmetic of
:func:`grefel.data.transforms.eval_batch`.
"""

from __future__ import annotations

import json
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
        try:
            self.classes = list(json.loads(meta["classes"]))
            self.size, self.crop = int(meta["image_size"]), int(meta["crop"])
            self.mean, self.std = json.loads(meta["mean"]), json.loads(meta["std"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"{self.path} lacks grefel's metadata ({type(e).__name__}: {str(e)[:60]}): "
                "export the checkpoint with `grefel export`"
            ) from None
        names = [o.name for o in self.session.get_outputs()]
        if names[: len(OUTPUTS)] != list(OUTPUTS):
            raise CheckpointError(
                f"{self.path} has outputs {names}, not {list(OUTPUTS)}: export it with `grefel export`"
            )
        self.metadata = dict(meta)

    def run(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        x = preprocess(faces, self.crop, self.mean, self.std)
        out = self.session.run(list(OUTPUTS), {self.session.get_inputs()[0].name: x})
        return dict(zip(OUTPUTS, out))
