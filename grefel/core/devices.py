"""The machine: its CPU cores, and the one device resolver for PyTorch, ONNX Runtime and the face aligner.

A device is named ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. :func:`parse_device` checks the name
(a one-line error otherwise); :func:`torch_device` gives PyTorch's device and :func:`onnx_providers`
ONNX Runtime's execution providers for the same name, so `grefel train`, `evaluate`, `predict`
(checkpoints and ``.onnx`` models alike), the Python API and the face aligner read a device the
same way. ``auto`` is a GPU where the engine has one (PyTorch: CUDA available, GPU ``local_rank``
under torchrun; ONNX Runtime: its CUDA provider installed), else the CPU. A CUDA device asked for
where there is none is an error, never a silent CPU run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from grefel.core.errors import GrefelError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_NAME = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Device:
    """A parsed device name: ``kind`` auto, cpu or cuda; ``index`` N of ``cuda:N`` (None: not given)."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(device) -> Device:
    """``device`` (a name, a ``torch.device``, or None for auto) checked and parsed."""
    text = "auto" if device is None or str(device).strip() == "" else str(device).strip().lower()
    m = _NAME.fullmatch(text)
    if m is None or (m.group(1) != "cuda" and m.group(2) is not None):
        raise GrefelError(f"unknown device '{device}': use {DEVICE_NAMES}")
    return Device(m.group(1), None if m.group(2) is None else int(m.group(2)))


def torch_device(device, local_rank: int = 0):
    """PyTorch's device for ``device``: ``auto`` is GPU ``local_rank`` when CUDA is available, else
    the CPU; ``cuda`` is GPU ``local_rank``; ``cuda:N`` must exist."""
    import torch  # lazy: core stays importable without loading torch (ONNX Runtime users)

    d = parse_device(device)
    if d.kind == "cpu" or (d.kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GrefelError(f"device '{device}' asked for, but torch sees no CUDA GPU here: use cpu")
    index = local_rank if d.index is None else d.index
    count = torch.cuda.device_count()
    if index >= count:
        raise GrefelError(
            f"device 'cuda:{index}' asked for, but torch sees {count} GPU(s): use cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def onnx_providers(device) -> tuple[list, str]:
    """ONNX Runtime's execution providers for ``device``, and the device they run on (``cpu`` / ``cuda:N``)."""
    import onnxruntime as ort  # lazy: only ONNX models need it

    d = parse_device(device)
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if d.kind == "cpu" or (d.kind == "auto" and not has_cuda):
        return ["CPUExecutionProvider"], "cpu"
    if not has_cuda:
        raise GrefelError(
            f"device '{device}' asked for, but this ONNX Runtime has no CUDA provider: "
            "install onnxruntime-gpu, or use cpu"
        )
    index = d.index or 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"
