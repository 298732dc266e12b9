"""Process-group plumbing for multi-GPU / multi-node training under torchrun.

``torchrun`` starts one process per GPU and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them, picks the device
(``cuda:<LOCAL_RANK>`` or the CPU) and joins the group (NCCL on GPUs, gloo on CPUs). Without those
variables everything runs as one process and every helper here is a no-op.

    torchrun --nproc_per_node 8 -m grefel_cli.main train --dataset rafdb              # one node
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST \\
             --master_port 29500 -m grefel_cli.main train --dataset rafdb             # two nodes
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from grefel.core.devices import torch_device


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; return rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None
        )
    return DistInfo(rank, local, world, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes in place (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj):
    """List of ``obj`` from every rank (``[obj]`` for one process)."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def all_ok(ok: bool, device: torch.device) -> bool:
    """True only when every rank says ok (keeps ranks in step after a rank-0-only step fails)."""
    t = torch.tensor([0.0 if ok else 1.0], device=device)
    return all_reduce_sum(t).item() == 0
