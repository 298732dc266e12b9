"""The model behind `grefel predict` and :func:`grefel.load`: a checkpoint run by PyTorch, or an
exported ONNX file run by ONNX Runtime (no torch imported).

Both take aligned uint8 faces (N, S, S, 3) at the stored size ``S`` of the training data and
return float32 numpy arrays: ``primary`` (eq. 9), ``corrected`` (eq. 19), each (N, C), and the
``embedding`` e (N, D). Both apply the same evaluation preset (centre crop, ImageNet mean/std;
:mod:`grefel.data.transforms`); the ONNX file records it in its metadata (:mod:`grefel.inference.export`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from grefel.core.errors import CheckpointError, GrefelError

OUTPUTS = ("primary", "corrected", "embedding")


def checkpoint_classes(payload: dict, path: str | os.PathLike) -> list[str]:
    """The class names a checkpoint records, checked against its head's width."""
    classes = list((payload.get("dataset") or {}).get("classes") or [])
    n = (payload.get("model_config") or {}).get("num_classes")
    if not classes:
        raise CheckpointError(f"{path} does not record its class names: pass a checkpoint written by `grefel train`")
    if n is not None and int(n) != len(classes):
        raise CheckpointError(
            f"{path} has a {n}-class head but records {len(classes)} classes ({', '.join(classes)}): "
            "the file is inconsistent; use the run's best.pt"
        )
    return classes


def stored_size(payload: dict) -> int:
    """Stored face size of the training data (its manifest, when still on disk), else 128."""
    path = (payload.get("dataset") or {}).get("path")
    if path and (Path(path) / "manifest.json").is_file():
        from grefel.core.io import read_json

        return int(read_json(Path(path) / "manifest.json").get("image_size", 128))
    return 128


class TorchClassifier:
    """A `grefel train` checkpoint in eval mode (bf16 autocast on CUDA, as `grefel evaluate`)."""

    backend = "torch"

    def __init__(self, ckpt: str | os.PathLike, device: str | None = None):
        from grefel.evaluation.evaluate import eval_crop, model_from_checkpoint
        from grefel.training.checkpoint import load_checkpoint
        from grefel.training.distributed import pick_device

        payload = load_checkpoint(ckpt)
        self.path = str(ckpt)
        self.classes = checkpoint_classes(payload, ckpt)
        self.device = pick_device(device)
        self.model = model_from_checkpoint(payload, self.device, ckpt)
        self.size, self.crop = stored_size(payload), eval_crop(payload)

    @property
    def aligner_device(self) -> str:
        return "cuda" if self.device.type == "cuda" else "cpu"

    def run(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        from grefel.evaluation.evaluate import run_model

        out = run_model(self.model, faces, self.device, crop=self.crop)
        return {k: out[k] for k in OUTPUTS}


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
        import onnxruntime as ort

        self.path = str(path)
        if not Path(path).is_file():
            raise CheckpointError(f"ONNX model {path} not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        want_cuda = device is not None and str(device).startswith("cuda")
        providers = ["CPUExecutionProvider"]
        if want_cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise GrefelError(
                f"device '{device}' asked for, but this ONNX Runtime has no CUDA provider: "
                "install onnxruntime-gpu, or use cpu"
            )
        if want_cuda:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path} cannot be loaded by ONNX Runtime ({reason}): write it again with `grefel export`"
            ) from None
        self.aligner_device = "cuda" if providers[0].startswith("CUDA") else "cpu"
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


def open_classifier(path: str | os.PathLike, device: str | None = None) -> TorchClassifier | OnnxClassifier:
    """An ``.onnx`` file -> :class:`OnnxClassifier`; anything else -> :class:`TorchClassifier` (a checkpoint)."""
    if Path(path).suffix.lower() == ".onnx":
        return OnnxClassifier(path, device)
    if Path(path).is_dir():
        raise GrefelError(f"{path} is a folder: pass a checkpoint file (best.pt) or an exported .onnx model")
    return TorchClassifier(path, device)
