"""`grefel evaluate`: run a checkpoint over a split and keep every output of the model per sample.

The checkpoint alone says what to evaluate: it records its dataset (name, protocol, classes,
path), the label set it was trained with and its model configuration. The result is one Parquet
file (schema: :mod:`grefel.evaluation.predictions`) with the primary distribution (eq. 9), both
corrections (eq. 15, 17, 18), the corrected distribution (eq. 19), the confidences (eq. 10-11) and
the embedding of every sample, beside its clean and noisy labels, group and attributes. Reports,
notebooks and other tools read that file; nothing downstream re-runs the model.

Long evaluations never lose finished work: outputs are written in chunks under
``<file>.parts/`` as they complete, a rerun resumes after the last whole chunk, and the final file
appears (atomically) only when every sample is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grefel.core.devices import torch_device
from grefel.core.errors import CheckpointError, DatasetError, GrefelError
from grefel.core.io import atomic_path, read_json, sha256_file, writable_file, write_json
from grefel.core.paths import resolve_dataset
from grefel.data.shards import LABELS_DIR, PreparedDataset
from grefel.data.transforms import MODEL_INPUT, eval_batch
from grefel.evaluation.predictions import CONFIDENCES, DISTRIBUTIONS, read_predictions_meta, write_predictions
from grefel.models.factory import model_from_record
from grefel.training.checkpoint import load_checkpoint

CHUNK = 2048  # samples per resumable part file


# -- checkpoint -> model ---------------------------------------------------------------------------
def model_from_checkpoint(
    payload: dict, device: str | torch.device = "cpu", path: str | os.PathLike = "checkpoint"
) -> torch.nn.Module:
    """Rebuild the model of a loaded checkpoint in eval mode, from its resolved ``model_kwargs`` (the
    architecture it was trained with, whatever the presets are now)."""
    cfg, state, kwargs = payload.get("model_config"), payload.get("model"), payload.get("model_kwargs")
    if not all(isinstance(v, dict) for v in (cfg, state, kwargs)):
        raise CheckpointError(
            f"{path} has no model_config / model_kwargs / model state: it is not a `grefel train` checkpoint; "
            "pass a run's best.pt or last.pt"
        )
    try:
        model = model_from_record(kwargs, cfg)
    except (TypeError, ValueError, KeyError, GrefelError) as e:
        raise CheckpointError(
            f"{path}: its model_config cannot build a model with this grefel ({e}): "
            "use the grefel version that trained it"
        ) from None
    missing, unexpected = _load_state(model, state, path)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model it describes ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {(missing + unexpected)[0]}): the file is damaged or from another grefel version"
        )
    return model.to(device).eval()


def _load_state(model: torch.nn.Module, state: dict, path) -> tuple[list, list]:
    try:
        res = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()
        reason = first[1].strip() if len(first) > 1 else first[0] if first else "shape mismatch"
        raise CheckpointError(
            f"{path} does not fit the model it describes ({reason[:160]}): "
            "the file is damaged or from another grefel version"
        ) from None
    return list(res.missing_keys), list(res.unexpected_keys)


def checkpoint_dataset(
    payload: dict,
    dataset: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    path="checkpoint",
) -> PreparedDataset:
    """The prepared dataset a checkpoint was trained on (or ``dataset``), checked against it.

    Order: ``dataset`` when given; else, with an explicit ``data_root``, the recorded name under it
    (what is given beats what the checkpoint remembers); else the recorded path if it still exists,
    else the recorded name under the data root. Refuses a dataset whose classes or protocol differ
    from the checkpoint's.
    """
    info = payload.get("dataset") or {}
    if dataset is None:
        recorded = info.get("path")
        if data_root is not None and info.get("name"):
            dataset = info["name"]
        elif recorded and (Path(recorded) / "manifest.json").is_file():
            dataset = recorded
        else:
            dataset = info.get("name")
            if not dataset:
                raise DatasetError(f"{path} does not record its dataset: name the prepared dataset to evaluate on")
    ds = PreparedDataset(resolve_dataset(dataset, data_root))
    check_compatible(payload, ds, path)
    ds.verify_contents()  # sha256 of each shard, cached by size and mtime: a damaged shard is one line
    return ds


def check_compatible(payload: dict, ds: PreparedDataset, path="checkpoint") -> None:
    """A clear error when a checkpoint's classes or protocol differ from a dataset's."""
    info = payload.get("dataset") or {}
    classes = info.get("classes")
    if classes is not None and list(classes) != ds.classes:
        raise CheckpointError(
            f"{path} was trained on classes {list(classes)} but dataset '{ds.name}' has {ds.classes}: "
            f"evaluate it on the dataset it was trained on ({info.get('name') or 'see its training run'})"
        )
    protocol = info.get("protocol")
    if protocol and ds.protocol and protocol != ds.protocol:
        raise CheckpointError(
            f"{path} was trained with protocol '{protocol}' but dataset '{ds.name}' is prepared as '{ds.protocol}': "
            f"prepare the dataset with protocol '{protocol}' or evaluate on one prepared that way"
        )
    num_classes = (payload.get("model_config") or {}).get("num_classes")
    if num_classes is not None and int(num_classes) != ds.num_classes:
        raise CheckpointError(
            f"{path} has a {num_classes}-class head but dataset '{ds.name}' has {ds.num_classes} classes: "
            "evaluate it on a dataset with the same classes"
        )


# -- paths and freshness ---------------------------------------------------------------------------
def default_predictions_path(ckpt: str | os.PathLike, split: str = "test", label_set: str | None = None) -> Path:
    """``<run>/predictions/<ckpt stem>-<split>-<label set>.parquet`` beside the checkpoint."""
    ckpt = Path(ckpt)
    return ckpt.parent / "predictions" / f"{ckpt.stem}-{split}-{label_set or 'clean'}.parquet"


def predictions_are_current(
    path: str | os.PathLike, ckpt_sha256: str, split: str, label_set: str | None, precision: str | None = None
) -> bool:
    """True when ``path`` holds predictions of this exact checkpoint file, split and label set
    (and precision, when one is asked for: a file made anywhere else is fine otherwise)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        meta = read_predictions_meta(path)
    except GrefelError:
        return False
    same = (
        meta.get("checkpoint_sha256") == ckpt_sha256
        and meta.get("split") == split
        and (meta.get("label_set") or "clean") == (label_set or "clean")
    )
    return same and (precision is None or meta.get("precision") == precision)


# -- running the model -----------------------------------------------------------------------------
@torch.inference_mode()
def run_model(
    model: torch.nn.Module, images: np.ndarray, device: torch.device, amp: bool | None = None, crop: int = MODEL_INPUT
) -> dict[str, np.ndarray]:
    """One batch of uint8 NHWC faces through the model: float32 numpy arrays of every output we keep.

    ``crop``: the evaluation preset's centre crop (the run's training crop, :func:`eval_crop`). On
    CUDA the forward runs under bf16 autocast (``amp=None`` means on for CUDA); the distributions
    are returned in float32 either way.
    """
    x = eval_batch(images, crop=crop, device=device)
    use_amp = (device.type == "cuda") if amp is None else amp
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        out = model(x)
    keep = (*DISTRIBUTIONS, *CONFIDENCES, "embedding")
    return {k: getattr(out, k).float().cpu().numpy() for k in keep}


def eval_crop(payload: dict) -> int:
    """Centre crop for evaluation: the size the run trained on (``config.crop``), else 112."""
    crop = (payload.get("config") or {}).get("crop")
    return int(crop) if isinstance(crop, (int, float)) and crop > 0 else MODEL_INPUT


def _predict_indices(
    model, ds: PreparedDataset, indices: np.ndarray, device, batch_size: int, amp, crop, progress, task
) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        res = run_model(model, ds.read_images(idx), device, amp, crop)
        for k, v in res.items():
            parts.setdefault(k, []).append(v)
        if progress is not None:
            progress.advance(task, len(idx))
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate(
    ckpt: str | os.PathLike,
    dataset: str | os.PathLike | None = None,
    split: str = "test",
    label_set: str | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    *,
    split_set: str | None = None,
    data_root: str | os.PathLike | None = None,
    amp: bool | None = None,
    force: bool = False,
    show_progress: bool = True,
    payload: dict | None = None,
) -> Path:
    """Predict every sample of ``split`` with checkpoint ``ckpt``; write and return the predictions file.

    ``label_set`` (default: the one the checkpoint was trained with) adds its labels as
    ``label_noisy``. ``out`` defaults to :func:`default_predictions_path`. An up-to-date file (same
    checkpoint bytes, split and label set) is reused unless ``force``. ``amp``: bf16 autocast
    (default: on for CUDA, off on CPU); ``amp=False`` evaluates in float32 everywhere.
    """
    check_batch_size(batch_size)
    ckpt = Path(ckpt)
    payload = payload if payload is not None else load_checkpoint(ckpt)
    ckpt_sha = sha256_file(ckpt)
    wanted = None if amp is None else ("bf16" if amp else "fp32")  # a reused file must match an asked precision
    labels = _label_set_to_use(payload, label_set)
    path = Path(out) if out is not None else default_predictions_path(ckpt, split, labels)
    if not force and predictions_are_current(path, ckpt_sha, split, labels, wanted):
        return path
    writable_file(path, "predictions file", inputs=[ckpt])  # before any work (the dataset's sha256 check too)

    ds = checkpoint_dataset(payload, dataset, data_root, ckpt)
    if labels and label_set is None and labels not in ds.label_sets():
        # the run's own label set is gone (dataset copied without labels/): clean labels only
        labels = None
        path = Path(out) if out is not None else default_predictions_path(ckpt, split, None)
        if not force and predictions_are_current(path, ckpt_sha, split, None, wanted):
            return path
    split_set = _trained_split_set(payload, ds, split_set)
    indices = _split_indices(ds, split, split_set)
    noisy = ds.labels(labels)[indices] if labels else None
    writable_file(path, "predictions file", inputs=[ckpt])

    dev = torch_device(device)
    model = model_from_checkpoint(payload, dev, ckpt)
    crop = eval_crop(payload)
    facts = {"checkpoint_sha256": ckpt_sha, "split": split, "split_set": split_set, "crop": crop, "out": path}
    outputs = _run_chunks(model, ds, indices, dev, batch_size, amp, path, facts, show_progress)

    attributes = _attribute_names(ds)
    columns = _prediction_columns(ds, indices, split, noisy, attributes, outputs)
    precision = "bf16" if ((dev.type == "cuda") if amp is None else amp) else "fp32"
    facts.update(label_set=labels, device=str(dev), precision=precision, attributes=attributes)
    write_predictions(path, columns, _predictions_meta(ds, payload, model, ckpt, facts))
    shutil.rmtree(_parts_dir(path), ignore_errors=True)
    return path


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise GrefelError(f"batch_size must be a whole number of at least 1 (got {batch_size!r})")


def _label_set_to_use(payload: dict, label_set: str | None) -> str | None:
    """The asked label set, else the one the run trained on; None for clean labels only."""
    if label_set is None:
        label_set = payload.get("label_set") or None
    return None if label_set in ("", "clean") else label_set


def _trained_split_set(payload: dict, ds: PreparedDataset, split_set: str | None) -> str | None:
    """The asked split set, else the one the run was trained and validated with (if this copy has it)."""
    recorded = payload.get("split_set")
    if split_set is None and (recorded == "official" or recorded in ds.split_sets()):
        return recorded
    return split_set


def _split_indices(ds: PreparedDataset, split: str, split_set: str | None) -> np.ndarray:
    indices = ds.indices(split, split_set)
    if len(indices) == 0:
        counts = {s: int(n) for s, n in zip(*np.unique(ds.splits(split_set), return_counts=True)) if s}
        raise DatasetError(
            f"split '{split}' of {ds.name} is empty (splits: {counts or 'none'}): evaluate one of those splits"
        )
    return indices


def _attribute_names(ds: PreparedDataset) -> list[str]:
    """Per-image attribute columns of the dataset (RAF-DB gender, race, age ...)."""
    fixed = ("index", "label", "split", "group", "source", "shard", "row")
    return [c for c in ds.meta.columns if c not in fixed]


def _prediction_columns(
    ds: PreparedDataset,
    indices: np.ndarray,
    split: str,
    noisy: np.ndarray | None,
    attributes: list[str],
    outputs: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The columns of the predictions file (schema: :mod:`grefel.evaluation.predictions`), in order."""
    meta_df = ds.meta.loc[indices]
    columns: dict[str, np.ndarray] = {
        "index": indices.astype(np.int64),
        "source": meta_df["source"].to_numpy(),
        "group": meta_df["group"].to_numpy(),
        "split": np.full(len(indices), split),
        "label": meta_df["label"].to_numpy().astype(np.int64),
    }
    if noisy is not None:
        columns["label_noisy"] = noisy.astype(np.int64)
    for a in attributes:
        columns[a] = meta_df[a].to_numpy().astype(np.int64)
    columns["pred_primary"] = outputs["primary"].argmax(1).astype(np.int64)  # eq. 9
    columns["pred_corrected"] = outputs["corrected"].argmax(1).astype(np.int64)  # eq. 19
    for k in CONFIDENCES:
        columns[k] = outputs[k].astype(np.float32)
    for k in (*DISTRIBUTIONS, "embedding"):
        columns[k] = outputs[k]
    return columns


def _predictions_meta(ds: PreparedDataset, payload: dict, model: torch.nn.Module, ckpt: Path, facts: dict) -> dict:
    """The file's metadata: classes, dataset, what was evaluated how, and the run's configuration.

    ``facts`` of this evaluation: checkpoint_sha256, split, split_set, label_set, device,
    precision, crop, attributes and out (the predictions file: the checkpoint is stored relative
    to its folder, so a moved or copied run or study folder holds no absolute path of itself).
    """
    label_set, attributes = facts["label_set"], facts["attributes"]
    return {
        "classes": ds.classes,
        "dataset": {
            "name": ds.name,
            "protocol": ds.protocol,
            "path": str(ds.root.resolve()),
            "manifest_sha256": ds.manifest_sha256,
            "synthetic": ds.synthetic is not None,
        },
        "split": facts["split"],
        "split_set": facts["split_set"],
        "label_set": label_set or "clean",
        "label_set_info": label_set_info(ds, label_set),
        "checkpoint": os.path.relpath(ckpt.resolve(), Path(facts["out"]).resolve().parent),  # moves with the run
        "checkpoint_sha256": facts["checkpoint_sha256"],
        "epoch": payload.get("epoch"),
        "device": facts["device"],
        "precision": facts["precision"],
        "crop": facts["crop"],
        "model": model_settings(model),
        "model_config": payload.get("model_config"),
        "config": payload.get("config"),
        "train_label_set": payload.get("label_set"),
        "train_label_set_info": _train_label_set_info(ds, payload.get("label_set")),
        "attributes": attributes,
        "attribute_codes": attribute_codes(ds, attributes),
    }


def _parts_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


def _run_chunks(
    model, ds, indices, device, batch_size: int, amp, out: Path, facts: dict, show_progress: bool
) -> dict[str, np.ndarray]:
    """Predict ``indices`` chunk by chunk, keeping each finished chunk on disk so a rerun resumes.

    Chunks live in ``.<out name>.parts/`` beside ``out``, with a fingerprint (checkpoint, dataset,
    split, samples, chunk size, crop: ``facts``) that a rerun must match to reuse them.
    """
    parts_dir = _parts_dir(out)
    fingerprint = {
        "checkpoint_sha256": facts["checkpoint_sha256"],
        "manifest_sha256": ds.manifest_sha256,
        "split": facts["split"],
        "split_set": facts["split_set"],
        "n": int(len(indices)),
        "chunk": CHUNK,
        "crop": facts["crop"],
    }
    fp_file = parts_dir / "fingerprint.json"
    if parts_dir.is_dir() and (not fp_file.is_file() or read_json(fp_file) != fingerprint):
        shutil.rmtree(parts_dir)  # left by another checkpoint or split: not ours to resume
    if not fp_file.is_file():
        write_json(fp_file, fingerprint)
    chunks = [indices[s : s + CHUNK] for s in range(0, len(indices), CHUNK)]
    done = [parts_dir / f"part-{k:05d}.npz" for k in range(len(chunks))]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task(f"evaluate {ds.name}/{facts['split']}", total=len(indices))
        for k, idx in enumerate(chunks):
            if done[k].is_file():
                progress.advance(task, len(idx))
                continue
            res = _predict_indices(model, ds, idx, device, batch_size, amp, facts["crop"], progress, task)
            with atomic_path(done[k]) as tmp, open(tmp, "wb") as f:
                np.savez(f, **res)
    merged: dict[str, list] = {}
    for p in done:
        with np.load(p) as z:
            for name in z.files:
                merged.setdefault(name, []).append(z[name])
    return {k: np.concatenate(v) for k, v in merged.items()}


def model_settings(model: torch.nn.Module) -> dict:
    """Effective ablation settings of a built model (presets fill what model_config leaves out)."""
    anchors = getattr(model, "anchors", None)
    return {
        "num_anchors": 0 if anchors is None else int(anchors.shape[1]),
        "reliability": getattr(model, "reliability", None),
    }


# -- dataset side information ---------------------------------------------------------------------
def label_set_info(ds: PreparedDataset, label_set: str | None) -> dict:
    """Attributes of ``labels/<set>.h5`` (noise, mode, seed, realised rate ...), JSON-decoded."""
    if not label_set:
        return {"noise": 0.0}
    p = ds.root / LABELS_DIR / f"{label_set}.h5"
    if not p.is_file():
        return {}
    import h5py

    with h5py.File(p, "r") as f:
        return {k: _decode_attr(v) for k, v in f.attrs.items()}


def _train_label_set_info(ds: PreparedDataset, name: str | None) -> dict:
    """Noise attributes of the label set the run trained on ({} when this copy lacks it)."""
    name = None if name in (None, "", "clean") else name
    if name and name not in ds.label_sets():
        return {}
    return label_set_info(ds, name)


def attribute_codes(ds: PreparedDataset, names: list[str]) -> dict[str, dict[str, str]]:
    """Code -> name of each attribute: the manifest's ``attributes`` (``{"gender": {"0": "male"}}``),
    else a JSON mapping or list stored as an HDF5 attribute of the shard's ``attributes/<name>``.
    An attribute without either keeps its numeric codes.
    """
    if not names:
        return {}
    out: dict[str, dict[str, str]] = {}
    declared = ds.manifest.get("attributes")
    if isinstance(declared, dict):
        for name in names:
            if isinstance(declared.get(name), dict) and declared[name]:
                out[name] = {str(k): str(v) for k, v in declared[name].items()}
    if len(out) == len(names) or not ds.shards:
        return out
    import h5py

    with h5py.File(ds.root / ds.shards[0]["file"], "r") as f:
        grp = f.get("attributes")
        for name in names:
            if grp is None or name not in grp or name in out:
                continue
            for v in grp[name].attrs.values():
                v = _decode_attr(v)
                if isinstance(v, dict):
                    out[name] = {str(k): str(x) for k, x in v.items()}
                    break
                if isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
                    out[name] = {str(i): x for i, x in enumerate(v)}
                    break
    return out


def _decode_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return json.loads(v)
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
