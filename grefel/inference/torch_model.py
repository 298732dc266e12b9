"""A `grefel train` checkpoint as a classifier of aligned faces, run by PyTorch (eval mode).

It applies the evaluation preset of :mod:`grefel.data.transforms` (centre crop, ImageNet mean and
std) and returns the arrays named :data:`grefel.inference.records.OUTPUTS`.
"""

from __future__ import annotations

import os

import numpy as np

from grefel.core.devices import torch_device
from grefel.evaluation.evaluate import eval_crop, model_from_checkpoint, run_model
from grefel.inference.records import OUTPUTS
from grefel.training.checkpoint import checkpoint_classes, load_checkpoint, stored_size


class TorchClassifier:
    """A `grefel train` checkpoint in eval mode (bf16 autocast on CUDA, as `grefel evaluate`)."""

    backend = "torch"

    def __init__(self, ckpt: str | os.PathLike, device: str | None = None):

        payload = load_checkpoint(ckpt)
        self.path = str(ckpt)
        self.classes = checkpoint_classes(payload, ckpt)
        self.device = torch_device(device)
        self.model = model_from_checkpoint(payload, self.device, ckpt)
        self.size, self.crop = stored_size(payload), eval_crop(payload)

    @property
    def aligner_device(self) -> str:
        return str(self.device)

    def run(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        out = run_model(self.model, faces, self.device, crop=self.crop)
        return {k: out[k] for k in OUTPUTS}
