"""``grefel inspect``: what a prepared dataset holds, and a contact sheet of its aligned faces.

:func:`dataset_summary` computes the numbers (counts per split x class, groups per split, attributes,
skipped items by reason, provenance); :func:`contact_sheet` draws a few faces per class;
:func:`transition_figure` draws a label set's transition matrix against the clean labels;
:func:`inspect` does all three and prints them.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np

from grefel.core.console import make_console
from grefel.core.errors import GrefelError
from grefel.core.io import atomic_path, read_json
from grefel.core.paths import PROVENANCE, resolve_dataset
from grefel.data.align import template
from grefel.data.corrupt import transition_matrix
from grefel.data.prepare import SKIPPED, print_skipped, reason_kind
from grefel.data.shards import PreparedDataset

SHEET = "contact-sheet.png"
TRANSITIONS = "transitions-{}.png"  # a label set's transition matrix, beside the contact sheet by default


def dataset_summary(ds: PreparedDataset, label_set: str | None = None, split_set: str | None = None) -> dict:
    """Counts per split x class, group and attribute summaries, skipped reasons and provenance."""

    labels = ds.labels(label_set)
    splits = ds.splits(split_set)
    meta = ds.meta
    order = [s for s in ("train", "val", "test", "") if s in set(splits)] + sorted(
        set(splits) - {"train", "val", "test", ""}
    )
    counts = {sp: {c: int(np.sum((splits == sp) & (labels == k))) for k, c in enumerate(ds.classes)} for sp in order}
    groups = {}
    if len(meta) and (meta["group"] != "").any():
        for sp in order:
            g = meta["group"][splits == sp]
            g = g[g != ""]
            per = g.value_counts()
            groups[sp] = {
                "groups": int(len(per)),
                "min": int(per.min()) if len(per) else 0,
                "median": float(per.median()) if len(per) else 0.0,
                "max": int(per.max()) if len(per) else 0,
            }
    attributes = {}
    for name, codes in ds.manifest.get("attributes", {}).items():
        if name in meta:
            attributes[name] = {
                sp: {
                    codes.get(str(v), "unknown" if v < 0 else str(v)): int(n)
                    for v, n in sorted(Counter(meta[name][splits == sp]).items())
                }
                for sp in order
            }
    skipped: Counter = Counter()
    sk = ds.root / SKIPPED
    if sk.is_file():
        with open(sk, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                skipped[reason_kind(row["reason"])] += 1
    prov = ds.root / PROVENANCE
    return {
        "dataset": ds.name,
        "path": str(ds.root),
        "protocol": ds.protocol,
        "classes": ds.classes,
        "image_size": ds.image_size,
        "total": len(ds),
        "shards": len(ds.shards),
        "label_set": label_set or "clean",
        "split_set": split_set
        or ("default" if "default" in ds.split_sets() else "official"),  # what ds.splits(None) reads
        "counts": counts,
        "groups": groups,
        "group_kind": ds.manifest.get("groups", {}).get("kind", ""),
        "attributes": attributes,
        "skipped": dict(skipped.most_common()),
        "provenance": read_json(prov) if prov.is_file() else {},
    }


def contact_sheet(
    ds: PreparedDataset, path: str | os.PathLike, per_class: int = 8, seed: int = 0, labels: np.ndarray | None = None
) -> Path:
    """A PNG grid: one row per class, up to ``per_class`` random faces each (template points marked if aligned)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = ds.labels() if labels is None else labels
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(ds.num_classes):
        idx = np.flatnonzero(labels == k)
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)) if len(idx) else idx
        rows.append((k, len(idx), pick))
    cols = max(1, per_class)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.2 * cols + 1.2, 1.25 * len(rows) + 0.4), squeeze=False)
    aligned = ds.manifest.get("align", "none") != "none"
    pts = template(ds.image_size)
    for r, (k, n, pick) in enumerate(rows):
        images = ds.read_images(pick) if len(pick) else []
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(images):
                ax.imshow(images[c])
                if aligned:
                    ax.plot(pts[:, 0], pts[:, 1], "+", color="#ff3b30", markersize=4, markeredgewidth=0.8)
            if c == 0:
                ax.set_ylabel(f"{ds.classes[k]}\n({n:,})", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        f"{ds.name}: {len(ds):,} faces, {ds.image_size}x{ds.image_size}, align {ds.manifest.get('align', '?')}",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    except OSError as e:
        raise GrefelError(
            f"cannot write the contact sheet {path} ({e.strerror or e}): give a sheet path you can write to"
        ) from None
    finally:
        plt.close(fig)
    return path


def inspect(
    prepared: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    sheet: str | os.PathLike | None = None,
    per_class: int = 8,
    label_set: str | None = None,
    split_set: str | None = None,
    seed: int = 0,
    show: bool = True,
    verify: bool = False,
) -> dict:
    """Summarize a prepared dataset (name under the data root, or a path), print it, write the contact sheet.

    ``verify`` checks every shard's sha256 against the manifest first (all of them, whatever the
    cache of earlier checks says). Returns the summary of :func:`dataset_summary` with ``sheet`` (the
    PNG's path) added, and ``verified`` (shards checked) when ``verify``.
    """
    ds = PreparedDataset(resolve_dataset(prepared, data_root))
    verified = ds.verify_contents(cache=False) if verify else None
    summary = dataset_summary(ds, label_set, split_set)
    if verify:
        summary["verified"] = verified
    sheet = Path(sheet) if sheet else ds.root / SHEET
    summary["sheet"] = str(contact_sheet(ds, sheet, per_class, seed, labels=ds.labels(label_set)))
    if label_set not in (None, "", "clean"):
        noise = label_noise(ds, label_set)
        path = transition_figure(ds, label_set, sheet.parent / TRANSITIONS.format(label_set), noise)
        summary.update(noise=noise, transitions=str(path))
    if show:
        _print(summary)
    return summary


def _print(s: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    con = make_console()
    t = Table(
        title=f"{s['dataset']} (protocol {s['protocol']}, {s['total']:,} faces at {s['image_size']}px; "
        f"labels {s['label_set']}, splits {s['split_set']})"
    )
    t.add_column("class")
    for sp in s["counts"]:
        t.add_column(sp or "(no split)", justify="right")
    t.add_column("total", justify="right")
    for c in s["classes"]:
        row = [s["counts"][sp][c] for sp in s["counts"]]
        t.add_row(c, *(f"{v:,}" for v in row), f"{sum(row):,}")
    t.add_row(
        "[bold]total", *(f"[bold]{sum(s['counts'][sp].values()):,}" for sp in s["counts"]), f"[bold]{s['total']:,}"
    )
    con.print(t)
    if s["groups"]:
        g = Table(title=f"groups ({s['group_kind'] or 'group'}) per split")
        for col in ("split", "groups", "images/group min", "median", "max"):
            g.add_column(col, justify="right" if col != "split" else "left")
        for sp, v in s["groups"].items():
            g.add_row(sp or "(no split)", str(v["groups"]), str(v["min"]), f"{v['median']:g}", str(v["max"]))
        con.print(g)
    for name, per in s["attributes"].items():
        a = Table(title=f"attribute: {name}")
        a.add_column("split")
        values = sorted({v for d in per.values() for v in d})
        for v in values:
            a.add_column(v, justify="right")
        for sp, d in per.items():
            a.add_row(sp or "(no split)", *(f"{d.get(v, 0):,}" for v in values))
        con.print(a)
    if s["skipped"]:
        print_skipped(con, s["skipped"], f"skipped raw items ({sum(s['skipped'].values()):,}; see skipped.csv)")
    else:
        con.print("skipped raw items: none")
    p = s["provenance"]
    if p:
        al = p.get("aligner", {})
        con.print(
            escape(
                f"prepared by grefel {p.get('grefel_version')} on {p.get('created')} from {p.get('raw')} "
                f"(layout {p.get('layout')}); aligner: {al.get('method')}"
                + (f" [{al['package']}]" if al.get("package") else "")
            )
        )
        for f in p.get("source_files", []):
            con.print(escape(f"  source {f['path']}: sha256 {f['sha256'][:16]}... ({f['bytes']:,} bytes)"))
        if p.get("synthetic"):
            con.print(
                f"  synthetic faces drawn by {p['synthetic'].get('generator')} "
                f"({p['synthetic'].get('settings')}), not the real dataset"
            )
    if "verified" in s:
        con.print(f"sha256 of every shard checked against the manifest: all {s['shards']} match")
    con.print(escape(f"contact sheet: {s['sheet']}"))
    if "noise" in s:
        n = s["noise"]
        rates = ", ".join(f"{c} {100 * r:.1f} %" for c, r in zip(s["classes"], n["per_class"]))
        con.print(
            f"label set {s['label_set']} against the clean labels: {n['flipped']:,} of {n['eligible']:,} "
            f"non-test labels differ ({100 * n['rate']:.2f} %); per class: {rates}"
        )
        con.print(escape(f"transition matrix: {s['transitions']}"))


def label_noise(ds: PreparedDataset, label_set: str) -> dict:
    """A label set against the clean labels over the labelled non-test images: flip rate overall and per
    clean class, and the transition matrix ``T[i][j] = P(label set j | clean i)``."""
    clean, noisy = ds.labels(), ds.labels(label_set)
    official = ds.meta["split"].to_numpy().astype(str)
    keep = (clean >= 0) & (noisy >= 0) & (official != "test")
    T = transition_matrix(clean[keep], noisy[keep], ds.num_classes)
    present = [bool((clean[keep] == c).any()) for c in range(ds.num_classes)]
    return {
        "eligible": int(keep.sum()),
        "flipped": int((clean[keep] != noisy[keep]).sum()),
        "rate": float((clean[keep] != noisy[keep]).mean()) if keep.any() else 0.0,
        "per_class": [float(1 - T[c, c]) if present[c] else 0.0 for c in range(ds.num_classes)],
        "transition": T.tolist(),
    }


def transition_figure(ds: PreparedDataset, label_set: str, path: str | os.PathLike, noise: dict | None = None) -> Path:
    """A PNG heat map of the label set's transition matrix (rows: clean class, columns: its label in the set)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    noise = noise or label_noise(ds, label_set)
    T = np.asarray(noise["transition"])
    k = ds.num_classes
    fig, ax = plt.subplots(figsize=(1.6 + 0.62 * k, 1.0 + 0.55 * k))
    ax.imshow(T, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            dark = T[i, j] > 0.5
            ax.text(j, i, f"{T[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    names = [f"{c} ({100 * r:.1f} %)" for c, r in zip(ds.classes, noise["per_class"])]
    ax.set_xticks(range(k), ds.classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel(f"label in {label_set}")
    ax.set_ylabel("clean label (its flip rate)")
    rate = f"{100 * noise['rate']:.2f} % of {noise['eligible']:,} labels flipped"
    ax.set_title(f"{ds.name}, {label_set}: {rate}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    except OSError as e:
        raise GrefelError(f"cannot write {path} ({e.strerror or e}): give a sheet path in a writable folder") from None
    finally:
        plt.close(fig)
    return path
