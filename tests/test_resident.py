"""Faces held on the training device (data_on_device) give the loader's batches bit for bit."""

import json

import numpy as np
import pytest
import torch
from helpers import make_prepared

import grefel.training.loop
from grefel.core.errors import GrefelError
from grefel.data.loader import EvalBatches, RankBatches, epoch_plan, make_loader
from grefel.data.resident import RESIDENT_SHARE, ResidentBatches, ResidentFaces, use_data_on_device
from grefel.data.shards import PreparedDataset
from grefel.data.transforms import TrainAugment, augment_uniforms, train_batch
from grefel.training.checkpoint import load_checkpoint
from grefel.training.config import TrainConfig, validate_settings
from grefel.training.loop import train

KEYS = ("images", "labels", "index", "pos")


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _dataset():
    root = make_prepared(n_per_class=12, num_classes=3, n_groups=3, split={"train": 0.75, "val": 0.25}, shard_size=8)
    ds = PreparedDataset(root)
    labels = ds.labels()
    splits = ds.splits()
    return ds, labels, np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")


def _plan(labels, pool, epoch, global_batch):
    return epoch_plan(
        labels, np.zeros(len(labels), np.int64), pool, num_classes=3, epoch=epoch, seed=0, global_batch=global_batch
    ).indices


def _assert_same(resident, loaded):
    assert len(resident) == len(loaded) > 0
    for a, b in zip(resident, loaded):
        for k in KEYS:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("world_size", [1, 2])
def test_resident_batches_equal_the_loader_batches(world_size):
    """Every rank's batches (images, labels, indices, positions) and their augmentation, two epochs."""
    ds, labels, pool, val = _dataset()
    faces = ResidentFaces(ds, labels, np.union1d(pool, val), "cpu", chunk=5)  # chunks cross shard borders
    assert len(faces) == len(pool) + len(val) and faces.nbytes == len(faces) * 128 * 128 * 3
    for rank in range(world_size):
        sampler = RankBatches(np.zeros(0, np.int64), 6, rank, world_size)
        for epoch in range(2):
            sampler.set_plan(_plan(labels, pool, epoch, 6))
            resident = list(ResidentBatches(faces, sampler))
            _assert_same(resident, list(make_loader(ds, labels, sampler)))
            u = augment_uniforms(len(sampler.plan), 0, epoch)
            for batch in resident:
                want = train_batch(torch.from_numpy(ds.read_images(batch["index"].numpy())), u[batch["pos"]])
                assert torch.equal(train_batch(batch["images"], u[batch["pos"]], TrainAugment()), want)
        val_sampler = EvalBatches(val, 4, rank, world_size)
        _assert_same(list(ResidentBatches(faces, val_sampler)), list(make_loader(ds, labels, val_sampler)))


def test_resident_faces_refuse_an_index_they_do_not_hold():
    ds, labels, pool, val = _dataset()
    faces = ResidentFaces(ds, labels, pool, "cpu")
    with pytest.raises(ValueError, match="not held on the device"):
        list(ResidentBatches(faces, EvalBatches(val, 4)))


def test_training_on_device_held_faces_equals_the_loader_path(tmp_path, monkeypatch):
    """Same images and labels at every step, same weights and metrics after two epochs."""
    make_prepared(n_per_class=8, num_classes=2, n_groups=2, split={"train": 0.75, "val": 0.25})
    seen = {}
    original = grefel.training.loop.make_batch_sources

    def recording(run, data, sampler, val_sampler):
        sources = original(run, data, sampler, val_sampler)
        steps = seen.setdefault(run.cfg.data_on_device, [])

        class Recorded:
            def __init__(self, source):
                self.source = source

            def __len__(self):
                return len(self.source)

            def __iter__(self):
                for batch in self.source:
                    steps.append({k: batch[k].clone() for k in ("images", "labels")})
                    yield batch

        return tuple(Recorded(s) for s in sources)

    monkeypatch.setattr(grefel.training.loop, "make_batch_sources", recording)
    base = dict(dataset="toy", preset="tiny", epochs=2, per_class=4, batch_size=4, workers=0, quiet=True)
    runs = {
        mode: train(TrainConfig(**base, data_on_device=mode, run_dir=str(tmp_path), name=mode, deterministic=True))
        for mode in ("on", "off")
    }
    assert len(seen["on"]) == len(seen["off"]) == 2 * (2 + 1)  # per epoch: 2 steps + 1 validation batch
    for a, b in zip(seen["on"], seen["off"]):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    wa, wb = (load_checkpoint(runs[m] / "last.pt")["model"] for m in ("on", "off"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = {m: [json.loads(line) for line in (runs[m] / "metrics.jsonl").read_text().splitlines()] for m in runs}
    drop = ("images_per_s", "epoch_time_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows["on"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows["off"]
    ]


def test_data_on_device_choice(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert not use_data_on_device("auto", 10, cpu) and use_data_on_device("on", 10, cpu)
    assert not use_data_on_device("off", 10, gpu)
    free = 1000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 4 * free))
    budget = int(RESIDENT_SHARE * free)
    assert use_data_on_device("auto", budget, gpu) and not use_data_on_device("auto", budget + 1, gpu)
    assert use_data_on_device("on", free, gpu)
    with pytest.raises(GrefelError, match="data_on_device is on, but the faces take .* set data_on_device to auto"):
        use_data_on_device("on", free + 1, gpu)
    with pytest.raises(GrefelError, match="data_on_device must be one of auto, on, off"):
        use_data_on_device("yes", 10, cpu)


def test_new_settings_are_validated():
    validate_settings({"data_on_device": "off", "compile": True, "compile_mode": "reduce-overhead"})
    with pytest.raises(GrefelError, match="'data_on_device' must be one of auto, on, off"):
        validate_settings({"data_on_device": "yes"})
    with pytest.raises(GrefelError, match="'compile_mode' must be one of default, reduce-overhead, max-autotune"):
        validate_settings({"compile": True, "compile_mode": "fast"})
    with pytest.raises(GrefelError, match="'compile_mode' \\(max-autotune\\) takes effect only with compile on"):
        validate_settings({"compile_mode": "max-autotune"})
    with pytest.raises(GrefelError, match="takes effect only with compile on"):
        train(TrainConfig(compile_mode="reduce-overhead"))
    cfg = TrainConfig()
    assert (cfg.data_on_device, cfg.compile, cfg.compile_mode) == ("auto", False, "default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_resident_batches_on_the_gpu_equal_the_loader_batches():
    """On a GPU: the held faces' batches and their augmentation (grid_sample) equal the loader's, bit for bit."""
    ds, labels, pool, val = _dataset()
    dev = torch.device("cuda")
    faces = ResidentFaces(ds, labels, np.union1d(pool, val), dev, chunk=5)
    sampler = RankBatches(_plan(labels, pool, 0, 6), 6)
    u = augment_uniforms(len(sampler.plan), 0, 0).to(dev)
    loaded = list(make_loader(ds, labels, sampler, pin_memory=True))
    for a, b in zip(ResidentBatches(faces, sampler), loaded, strict=True):
        assert all(a[k].device.type == "cuda" for k in KEYS)
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
        assert all(torch.equal(a[k], b[k]) for k in KEYS)
        assert torch.equal(train_batch(a["images"], u[a["pos"]]), train_batch(b["images"], u[b["pos"]]))
