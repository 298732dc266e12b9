"""Prepared faces held on the training device: batches gathered by index there, no loader workers.

The loader path (:func:`grefel.data.loader.make_loader`) reads each batch from the shards in
DataLoader worker processes and copies it to the device. With the training setting
``data_on_device`` the uint8 faces that training reads (the train pool and the validation split)
are copied to the device once, when the run starts (:class:`ResidentFaces`), and each batch is
one ``index_select`` there (:class:`ResidentBatches`): no worker processes, and no host-to-device
copy per step. At the 128 px faces of a preparation, RAF-DB's 15k faces take 0.7 GB and
AffectNet's 290k faces 14 GB.

The batches are the loader's, bit for bit: the same batch samplers (:class:`~grefel.data.loader.RankBatches`,
:class:`~grefel.data.loader.EvalBatches`) choose positions and indices, so the same images in the
same order meet the same rows of augmentation uniforms, and under torchrun each rank gathers its
own slice of every global batch. Only where the tensors live differs: on a GPU the images, labels,
indices and positions of a batch are already on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from grefel.core.errors import GrefelError
from grefel.core.recipe import DATA_ON_DEVICE
from grefel.data.loader import EvalBatches, make_loader

RESIDENT_SHARE = 0.25  # auto: hold the faces on a GPU when they take at most this share of its free memory


def faces_nbytes(n: int, image_size: int) -> int:
    """Bytes of ``n`` uint8 faces of ``image_size`` x ``image_size`` x 3."""
    return int(n) * int(image_size) ** 2 * 3


def use_data_on_device(mode: str, nbytes: int, device: torch.device) -> bool:
    """Whether training holds its faces on ``device`` (the ``data_on_device`` setting).

    ``on`` and ``off`` as said; ``auto``: on a GPU when the faces take at most RESIDENT_SHARE of
    its free memory, never on the CPU (there the shards' pages sit in the page cache already, and
    the loader path has not been measured slower). ``on`` on a GPU without room for the faces is a
    one-line GrefelError.
    """
    if mode not in DATA_ON_DEVICE:
        raise GrefelError(f"data_on_device must be one of {', '.join(DATA_ON_DEVICE)} (got {mode!r})")
    if mode == "off":
        return False
    if device.type != "cuda":
        return mode == "on"
    free = torch.cuda.mem_get_info(device)[0]
    if mode == "on" and nbytes > free:
        raise GrefelError(
            f"data_on_device is on, but the faces take {nbytes / 2**30:.1f} GiB and {device} has "
            f"{free / 2**30:.1f} GiB free: set data_on_device to auto or off"
        )
    return mode == "on" or nbytes <= RESIDENT_SHARE * free


class ResidentFaces:
    """The uint8 faces (and labels) of ``indices`` of a prepared dataset, copied once to ``device``.

    The copy reads the shards in chunks through the loader path (``workers`` processes; pinned
    memory and asynchronous copies on a GPU), so a damaged shard fails here as it would in the
    loader. ``labels`` are the labels the run learns from (one per image of the dataset).
    """

    def __init__(self, ds, labels: np.ndarray, indices: np.ndarray, device, *, workers: int = 0, chunk: int = 1024):
        held = np.unique(np.asarray(indices, dtype=np.int64))
        self.device = torch.device(device)
        self.row_of = np.full(len(ds), -1, np.int64)  # dataset index -> row of self.images (-1: not held)
        self.row_of[held] = np.arange(len(held))
        size = ds.image_size
        self.images = torch.empty((len(held), size, size, 3), dtype=torch.uint8, device=self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)[held]).to(self.device)
        pin = self.device.type == "cuda"
        for batch in make_loader(ds, labels, EvalBatches(held, chunk), workers=workers, pin_memory=pin):
            first = int(batch["pos"][0])  # EvalBatches of one process: consecutive positions
            self.images[first : first + len(batch["pos"])].copy_(batch["images"], non_blocking=pin)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows of :attr:`images` holding these dataset indices."""
        rows = self.row_of[np.asarray(indices, dtype=np.int64)]
        if (rows < 0).any():
            missing = np.asarray(indices)[rows < 0][:5].tolist()
            raise ValueError(f"images {missing} are not held on the device (hold the train pool and validation split)")
        return rows


class ResidentBatches:
    """A batch sampler's batches gathered from :class:`ResidentFaces`: what ``make_loader`` yields.

    Each item is a dict of uint8 ``images`` (B, S, S, 3), ``labels``, ``index`` and ``pos``, all on
    the faces' device. Per pass, the sampler's positions, indices and rows go to the device in one
    copy; each batch is then two ``index_select`` calls and views.
    """

    def __init__(self, faces: ResidentFaces, sampler):
        self.faces, self.sampler = faces, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        batches = list(self.sampler)  # the sampler reads its plan when iterated (RankBatches.set_plan)
        if not batches:
            return
        pos = np.concatenate([np.asarray(p, dtype=np.int64) for p, _ in batches])
        idx = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in batches])
        table = torch.from_numpy(np.stack([pos, idx, self.faces.rows(idx)]))
        if self.faces.device.type == "cuda":
            table = table.pin_memory()
        table = table.to(self.faces.device, non_blocking=True)
        start = 0
        for p, _ in batches:
            end = start + len(p)
            rows = table[2, start:end]
            yield {
                "images": self.faces.images.index_select(0, rows),
                "labels": self.faces.labels.index_select(0, rows),
                "index": table[1, start:end],
                "pos": table[0, start:end],
            }
            start = end
