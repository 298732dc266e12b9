"""The model behind `grefel predict` and :func:`grefel.load`: a checkpoint run by PyTorch
(:mod:`grefel.inference.torch_model`), or an exported ONNX file run by ONNX Runtime
(:mod:`grefel.inference.onnx_model`, torch not imported).

Both take aligned uint8 faces (N, S, S, 3) at the stored size ``S`` of the training data and
return the float32 arrays named :data:`grefel.inference.records.OUTPUTS`. Each has ``classes``,
``size`` (S), ``crop``, ``path``, ``backend`` and ``aligner_device`` (where the face aligner runs).
"""

from __future__ import annotations

import os
from pathlib import Path

from grefel.core.errors import GrefelError


def open_classifier(path: str | os.PathLike, device: str | None = None):
    """An ``.onnx`` file -> :class:`OnnxClassifier`; anything else -> :class:`TorchClassifier` (a checkpoint)."""
    if Path(path).suffix.lower() == ".onnx":
        from grefel.inference.onnx_model import OnnxClassifier  # lazy: ONNX Runtime only for .onnx models

        return OnnxClassifier(path, device)
    if Path(path).is_dir():
        raise GrefelError(f"{path} is a folder: pass a checkpoint file (best.pt) or an exported .onnx model")
    from grefel.inference.torch_model import TorchClassifier  # lazy: torch only for checkpoints

    return TorchClassifier(path, device)
