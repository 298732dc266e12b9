"""Small generated prepared datasets for tests (no real faces, no downloads).

``make_prepared`` writes a real prepared-dataset folder (shards + manifest, the schema of
grefel/data/shards.py) whose classes are drawn as distinct, augmentation-proof patterns, so a tiny
model can learn them in a few epochs: horizontal stripes, vertical stripes, a disc, a checkerboard,
a ring, a cross, a diagonal-free blob grid, a frame. Patterns survive flips, small rotations and
crops; colours, phase and noise vary per image so the model has to learn the shape, not a pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from grefel.core.io import write_json
from grefel.core.paths import data_root
from grefel.data.shards import Sample, shard_name, write_shard

PATTERNS = ("hstripes", "vstripes", "disc", "checker", "ring", "cross", "dots", "frame")


def pattern_image(kind: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One uint8 (size, size, 3) image of pattern ``kind`` with random colours, phase and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2 + rng.uniform(-4, 4, 2)
    r = np.hypot(yy - c[0], xx - c[1])
    period = rng.uniform(14, 20)
    phase = rng.uniform(0, period)
    if kind == "hstripes":
        m = ((yy + phase) % period) < period / 2
    elif kind == "vstripes":
        m = ((xx + phase) % period) < period / 2
    elif kind == "disc":
        m = r < rng.uniform(28, 38)
    elif kind == "checker":
        m = (((yy + phase) // period + (xx + phase) // period) % 2) == 0
    elif kind == "ring":
        rad = rng.uniform(30, 40)
        m = np.abs(r - rad) < 6
    elif kind == "cross":
        w = rng.uniform(8, 12)
        m = (np.abs(yy - c[0]) < w) | (np.abs(xx - c[1]) < w)
    elif kind == "dots":
        m = np.hypot((yy + phase) % period - period / 2, (xx + phase) % period - period / 2) < period / 4
    elif kind == "frame":
        b = rng.uniform(22, 30)
        m = (np.abs(yy - c[0]) < size / 2 - b) & (np.abs(xx - c[1]) < size / 2 - b)
        m &= ~((np.abs(yy - c[0]) < size / 2 - b - 10) & (np.abs(xx - c[1]) < size / 2 - b - 10))
    else:
        raise ValueError(kind)
    fg = rng.uniform(140, 255, 3)
    bg = rng.uniform(0, 100, 3)
    img = np.where(m[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_prepared(
    root: str | Path | None = None,
    *,
    name: str = "toy",
    n_per_class: int | Sequence[int] = 20,
    num_classes: int = 4,
    classes: Sequence[str] | None = None,
    n_groups: int = 0,
    split: str | dict[str, float] | Callable[[int, int], str] = "train",
    image_size: int = 128,
    shard_size: int = 64,
    protocol: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a prepared dataset and return its folder (default ``<data root>/<name>``).

    ``n_per_class``: images per class (one number or one per class, for imbalance).
    ``n_groups``: 0 leaves ``group`` empty; otherwise sample i of a class goes to group
    ``g{i % n_groups}`` (every group holds every class).
    ``split``: one official split for all ("" for none), fractions like ``{"train": .8, "test": .2}``
    assigned per class in order, or a function (class, i) -> split.
    """
    root = Path(root) if root is not None else data_root() / name
    classes = list(classes) if classes is not None else [PATTERNS[k] for k in range(num_classes)]
    counts = [n_per_class] * len(classes) if isinstance(n_per_class, int) else list(n_per_class)
    rng = np.random.default_rng(seed)

    def split_of(k: int, i: int) -> str:
        if callable(split):
            return split(k, i)
        if isinstance(split, str):
            return split
        edges = np.cumsum(list(split.values())) * counts[k]
        return list(split)[int(np.searchsorted(edges, i, side="right"))] if i < edges[-1] else list(split)[-1]

    samples = []
    for k in range(len(classes)):
        for i in range(counts[k]):
            samples.append(
                Sample(
                    image=pattern_image(PATTERNS[k % len(PATTERNS)], rng, image_size),
                    label=k,
                    split=split_of(k, i),
                    source=f"{classes[k]}/{i:05d}.png",
                    group=f"g{i % n_groups}" if n_groups else "",
                )
            )
    order = rng.permutation(len(samples))  # interleave classes across shards, as real data is
    samples = [samples[j] for j in order]
    protocol = protocol or f"{len(classes)}cls"
    shards = []
    for s, start in enumerate(range(0, len(samples), shard_size)):
        shards.append(
            write_shard(
                root / "shards" / shard_name(s),
                samples[start : start + shard_size],
                first_index=start,
                dataset=name,
                protocol=protocol,
                classes=classes,
                image_size=image_size,
            )
        )
    write_json(
        root / "manifest.json",
        {
            "schema_version": 2,
            "dataset": name,
            "protocol": protocol,
            "classes": classes,
            "image_size": image_size,
            "counts": {"total": len(samples)},
            "shards": shards,
        },
    )
    return root


def one_line_error(r, *words: str) -> str:
    """A CLI run (typer's CliRunner result) failed with exit 1 and one `Error: ...` line, no traceback,
    holding ``words``; returns that line."""
    assert r.exit_code == 1, r.output + repr(r.exception)
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.exception
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, r.output
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]
