"""One device resolver for PyTorch, ONNX Runtime and the face aligner (grefel.core.devices)."""

import pytest
import torch

from grefel.core.devices import Device, onnx_providers, parse_device, torch_device
from grefel.core.errors import GrefelError


@pytest.mark.parametrize(
    "name, parsed",
    [
        (None, Device("auto")),
        ("", Device("auto")),
        ("auto", Device("auto")),
        ("cpu", Device("cpu")),
        ("CUDA", Device("cuda")),
        ("cuda:1", Device("cuda", 1)),
        (torch.device("cuda", 2), Device("cuda", 2)),
    ],
)
def test_names(name, parsed):
    assert parse_device(name) == parsed


@pytest.mark.parametrize("name", ["banana", "cpu:0", "cuda:", "cuda:-1", "mps", "cuda:1:2"])
def test_unknown_names_are_one_line(name):
    with pytest.raises(GrefelError, match="unknown device") as e:
        parse_device(name)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_refused_by_every_engine():
    assert torch_device("auto") == torch.device("cpu") and torch_device(None, local_rank=3) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(GrefelError, match="no CUDA GPU"):
            torch_device(name)
    assert onnx_providers("auto") == (["CPUExecutionProvider"], "cpu")
    assert onnx_providers("cpu") == (["CPUExecutionProvider"], "cpu")


def test_onnx_cuda_n_selects_that_gpu(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    providers, where = onnx_providers("cuda:1")
    assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1}) and where == "cuda:1"
    assert onnx_providers("auto")[1] == "cuda:0"  # auto takes the GPU where ONNX Runtime has one


def test_torch_cuda_n_beyond_the_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("cuda:1") == torch.device("cuda", 1)
    assert torch_device("cuda", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(GrefelError, match="sees 2 GPU"):
        torch_device("cuda:2")
