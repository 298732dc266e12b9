"""grefel checkpoints: one dict saved with ``torch.save``, loaded with ``weights_only=True``.

A checkpoint is untrusted input, so it holds only tensors, numbers, strings, lists and dicts.
Keys (format version 1)::

    format            "grefel-checkpoint"
    format_version    1
    grefel_version    version that wrote it
    model             model state_dict
    model_config      keyword arguments of grefel.models.create_model (preset, num_classes, ...); a
                      baseline's also names its method (grefel.models.factory.create_method_model)
    model_kwargs      the resolved GReFEL constructor arguments (preset applied); rebuilds the model
                      even after a preset changes
    dataset           {"name", "protocol", "classes", "manifest_sha256", "path"}
    label_set         "clean" or the name of a `grefel corrupt` label set
    config            the resolved training configuration (JSON-able dict)
    epoch             epochs completed
    metrics           the last validation metrics (dict)
    optimizer, scheduler, scaler, rng    training state for --resume (absent in exported files)
    method_state      the training method's own state for --resume (SCN: its relabelled labels)

Writes are atomic (temporary name, fsync, rename): a crash or a full disk never leaves a broken
file in place of a good one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from grefel.core.errors import CheckpointError, torch_load_failure
from grefel.core.io import atomic_path, read_json
from grefel.core.version import __version__

CHECKPOINT_FORMAT = "grefel-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Save ``payload`` (see module docstring) atomically and return the path."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "grefel_version": __version__,
        **payload,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    advice: str | None = None,
) -> dict[str, Any]:
    """Load a grefel checkpoint with ``weights_only=True``; a clear error for anything else.

    ``advice`` replaces the end of the message for an empty or unreadable file (what to do instead).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: pass the best.pt or last.pt of a `grefel train` run")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): " + (advice or "the copy failed; use the run's best.pt or last.pt")
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        # an untrusted file can make the unpickler raise anything (EOFError, IndexError, BadZipFile, ...)
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({torch_load_failure(path, e)}): "
            + (advice or "re-copy it or use the run's last.pt")
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a grefel checkpoint (no '{CHECKPOINT_FORMAT}' marker): "
            "pass a file written by `grefel train`; "
            "pretrained backbone weights go to --ir50 / --mobilefacenet / --poster"
        )
    if int(obj.get("format_version", 0)) > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer grefel (format {obj['format_version']}): upgrade grefel")
    return obj


def checkpoint_classes(payload: dict, path: str | os.PathLike) -> list[str]:
    """The class names a checkpoint records, checked against its head's width."""
    classes = list((payload.get("dataset") or {}).get("classes") or [])
    n = (payload.get("model_config") or {}).get("num_classes")
    if not classes:
        raise CheckpointError(f"{path} does not record its class names: pass a checkpoint written by `grefel train`")
    if n is not None and int(n) != len(classes):
        raise CheckpointError(
            f"{path} has a {n}-class head but records {len(classes)} classes ({', '.join(classes)}): "
            "the file is inconsistent; use the run's best.pt"
        )
    return classes


def stored_size(payload: dict) -> int:
    """Stored face size of the training data (its manifest, when still on disk), else 128."""
    path = (payload.get("dataset") or {}).get("path")
    if path and (Path(path) / "manifest.json").is_file():
        return int(read_json(Path(path) / "manifest.json").get("image_size", 128))
    return 128
