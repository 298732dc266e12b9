"""`grefel export`: a checkpoint's whole model (encoder + reliability balancing head) as one ONNX file.

The graph takes ``image``, float32 (N, 3, crop, crop), normalised faces (N dynamic), and returns
``primary`` (eq. 9) and ``corrected`` (eq. 19), both (N, C) probabilities, and ``embedding`` e
(N, D). What a runtime needs to feed it is in the model's metadata (``metadata_props``, strings;
lists as JSON):

    classes       the class names, in output order
    image_size    S: faces are aligned to the five-point template at S x S (uint8 RGB)
    crop          centre crop of the S x S face (the model's input size)
    mean, std     per-channel, applied to pixel / 255 after the crop (ImageNet's)
    preprocessing the same in words
    outputs, grefel_version, checkpoint_sha256, dataset, model_config

The export uses torch.onnx's dynamo exporter at its default opset (20 with torch 2.14; the tiny
preset's antialiased resize needs 18 or later) and checks the file with ONNX Runtime against
PyTorch on random inputs before it is renamed into place.
:class:`grefel.inference.onnx_model.OnnxClassifier` runs the result without torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grefel.core.errors import GrefelError
from grefel.core.io import atomic_path, sha256_file, writable_file
from grefel.core.version import __version__
from grefel.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from grefel.evaluation.evaluate import eval_crop, model_from_checkpoint
from grefel.inference.records import OUTPUTS
from grefel.training.checkpoint import checkpoint_classes, load_checkpoint, stored_size

VERIFY_BATCH = 3


@dataclass
class ExportResult:
    path: Path
    classes: list[str]
    image_size: int
    crop: int
    bytes: int
    max_abs_diff: dict[str, float]  # ONNX Runtime vs PyTorch per output, on VERIFY_BATCH random inputs


def _wrapped(model):
    """The model as a module returning the exported outputs as a tuple (ONNX graphs return tensors)."""
    import torch

    class Exported(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            out = self.m(image)
            return tuple(getattr(out, k) for k in OUTPUTS)

    return Exported(model).eval()


def metadata(payload: dict, classes: list[str], size: int, crop: int, sha256: str) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (see the module docstring)."""

    ds = payload.get("dataset") or {}
    return {
        "classes": json.dumps(classes),
        "image_size": str(size),
        "crop": str(crop),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "preprocessing": (
            f"align each face to the five-point template at {size}x{size} (uint8 RGB); centre crop {crop}x{crop}; "
            "x = (pixel / 255 - mean) / std per channel; NCHW float32"
        ),
        "outputs": "primary: (N, C) eq. 9; corrected: (N, C) after reliability balancing, eq. 19; embedding: (N, D)",
        "grefel_version": __version__,
        "checkpoint_sha256": sha256,
        "dataset": json.dumps({k: ds.get(k) for k in ("name", "protocol")}),
        "model_config": json.dumps(payload.get("model_config") or {}, default=str),
    }


def export_onnx(ckpt: str | os.PathLike, out: str | os.PathLike | None = None) -> ExportResult:
    """Write checkpoint ``ckpt`` as ONNX to ``out`` (default: beside it, ``<stem>.onnx``), verified."""
    import torch

    out = writable_file(out if out is not None else Path(ckpt).with_suffix(".onnx"), "ONNX file", inputs=[ckpt])
    payload = load_checkpoint(ckpt)
    classes = checkpoint_classes(payload, ckpt)
    model = model_from_checkpoint(payload, "cpu", ckpt)
    size, crop = stored_size(payload), eval_crop(payload)
    module = _wrapped(model)
    example = torch.zeros(2, 3, crop, crop)
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; say so before it does)
    except ImportError:
        raise GrefelError("ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on internals, not actionable
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            verbose=False,
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            external_data=False,
        )
    program.model.metadata_props.update(metadata(payload, classes, size, crop, sha256_file(ckpt)))
    program.model.doc_string = f"GReFEL ({(payload.get('model_config') or {}).get('preset', '?')}) exported by grefel"
    try:
        with atomic_path(out) as tmp:
            program.save(tmp, external_data=False)
            diffs = _verify(tmp, module, crop)
    except OSError as e:
        raise GrefelError(f"cannot write {out} ({e.strerror or e}): choose a writable path") from None
    return ExportResult(out, classes, size, crop, out.stat().st_size, diffs)


def _verify(path: Path, module, crop: int) -> dict[str, float]:
    """Largest absolute difference per output between ONNX Runtime and PyTorch on random inputs."""
    import onnxruntime as ort
    import torch

    x = torch.randn(VERIFY_BATCH, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = [t.numpy() for t in module(x)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUTS), {"image": x.numpy()})
    return {k: float(np.abs(r - g).max()) for k, r, g in zip(OUTPUTS, ref, got)}
