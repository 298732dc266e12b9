"""From prepared shards to uint8 batches: epoch plans, per-rank batch sampling, one read per batch.

The data path does as little as possible on the CPU: a DataLoader worker turns a list of global
indices into one uint8 (B, S, S, 3) tensor with one HDF5 read per shard touched (no per-image
decode, no PIL, no per-image transforms), and the training loop augments the whole batch on the
model's device (:func:`grefel.data.transforms.train_batch`).

An epoch is planned up front as an array of global indices (:func:`epoch_plan`): the refined draw
of section 4.1 (B x N_cls images) or, with refinement off, a shuffled pass over the training
split. The plan is padded by wrapping around to a multiple of the global batch, so every rank gets
the same number of equal batches. Global batch k covers plan positions [k*G, (k+1)*G) and rank r
takes the contiguous slice [k*G + r*G/W, k*G + (r+1)*G/W): the union over ranks is exactly the
single-process batch, and each position carries its augmentation row, so W processes compute
what one process with the same global batch computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from grefel.core.stop import ignore_stop_signals
from grefel.data.refine import N_PG, PER_CLASS, epoch_rng, refine_epoch
from grefel.data.shards import PreparedDataset


@dataclass
class EpochPlan:
    """Global sample indices of one epoch (padded) and how many of them are real draws."""

    indices: np.ndarray
    n_real: int
    short: list[int]
    missing: list[int]


def epoch_plan(
    labels: np.ndarray,
    groups: np.ndarray,
    pool: np.ndarray,
    *,
    num_classes: int,
    epoch: int,
    seed: int,
    global_batch: int,
    refine: bool = True,
    n_pg: int | None = N_PG,
    per_class: int = PER_CLASS,
) -> EpochPlan:
    """The epoch's indices: a refined draw (section 4.1) or a shuffled pass, padded to the batch."""
    if refine:
        ep = refine_epoch(
            labels, groups, pool, num_classes=num_classes, epoch=epoch, seed=seed, n_pg=n_pg, per_class=per_class
        )
        idx, short, missing = ep.indices, ep.short, ep.missing
    else:
        pool = np.asarray(pool, dtype=np.int64)
        pool = pool[labels[pool] >= 0]
        idx, short, missing = pool[epoch_rng(seed, epoch, 1).permutation(len(pool))], [], []
    n = len(idx)
    if n == 0:
        return EpochPlan(idx, 0, short, missing)
    pad = (-n) % global_batch
    if pad:
        idx = np.concatenate([idx, np.resize(idx, pad)])  # wrap around, as DistributedSampler does
    return EpochPlan(idx, n, short, missing)


class RankBatches(Sampler):
    """Yield (positions, indices) of this rank's share of each global batch of an epoch plan.

    The sampler runs in the main process, so one DataLoader with persistent workers serves the
    whole run: :meth:`set_plan` swaps in the next epoch's plan before iterating again.
    """

    def __init__(self, plan: np.ndarray, global_batch: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.local = global_batch // world_size
        self.set_plan(plan)

    def set_plan(self, plan: np.ndarray) -> None:
        if len(plan) % self.global_batch:
            raise ValueError("plan length must be a multiple of the global batch (use epoch_plan)")
        self.plan = np.asarray(plan)

    def __len__(self) -> int:
        return len(self.plan) // self.global_batch

    def __iter__(self):
        for k in range(len(self)):
            start = k * self.global_batch + self.rank * self.local
            pos = np.arange(start, start + self.local)
            yield pos, self.plan[pos]


class EvalBatches(Sampler):
    """Yield (positions, indices) batches over ``indices``, rank r taking every W-th sample."""

    def __init__(self, indices: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1):
        self.pos = np.arange(rank, len(indices), world_size)
        self.indices, self.batch_size = np.asarray(indices), batch_size

    def __len__(self) -> int:
        return -(-len(self.pos) // self.batch_size)

    def __iter__(self):
        for s in range(0, len(self.pos), self.batch_size):
            pos = self.pos[s : s + self.batch_size]
            yield pos, self.indices[pos]


class ShardBatches(Dataset):
    """Map (positions, indices) to a dict of uint8 images (B, S, S, 3), labels and both index arrays."""

    def __init__(self, ds: PreparedDataset, labels: np.ndarray):
        self.ds, self.labels = ds, np.asarray(labels, dtype=np.int64)

    def __getitem__(self, item):
        pos, idx = item
        return {
            "images": torch.from_numpy(self.ds.read_images(idx)),
            "labels": torch.from_numpy(self.labels[idx]),
            "index": torch.from_numpy(np.asarray(idx, dtype=np.int64)),
            "pos": torch.from_numpy(np.asarray(pos, dtype=np.int64)),
        }

    def __len__(self) -> int:  # not used by the batch samplers; DataLoader only needs __getitem__
        return len(self.ds)


def make_loader(
    ds: PreparedDataset,
    labels: np.ndarray,
    sampler: Sampler,
    *,
    workers: int = 0,
    pin_memory: bool = False,
    persistent: bool = False,
) -> DataLoader:
    """A DataLoader over whole batches (``batch_size=None``: the sampler yields batches).

    ``persistent`` keeps the worker processes between epochs (no start-up cost per epoch). Workers
    ignore SIGTERM and SIGUSR2 (:mod:`grefel.core.stop`): the main process decides when to stop.
    """
    return DataLoader(
        ShardBatches(ds, labels),
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0),  # never draw from the global RNG
        worker_init_fn=ignore_stop_signals if workers else None,  # a scheduler's SIGTERM is the main process's
    )
