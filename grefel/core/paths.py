"""Where prepared datasets and runs live.

The data root holds one folder per prepared dataset (``<root>/rafdb``, ``<root>/ferg`` ...), so
later commands say ``--dataset rafdb`` rather than a path. Resolution order:

1. an explicit ``--data-root`` option,
2. the ``GREFEL_DATA_ROOT`` environment variable,
3. ``$XDG_DATA_HOME/grefel`` (``~/.local/share/grefel`` when XDG_DATA_HOME is unset).
"""

from __future__ import annotations

import os
from pathlib import Path

from grefel.core.errors import DatasetError, GrefelError

ENV_DATA_ROOT = "GREFEL_DATA_ROOT"
MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
SYNTH_MARKER = ".grefel-synth.json"  # in a raw folder written by `grefel synth` (its settings)


def data_root(override: str | os.PathLike | None = None) -> Path:
    """The folder that holds prepared datasets (see module docstring for the order)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "grefel"


def list_prepared(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the prepared datasets under the data root (folders holding a manifest)."""
    r = data_root(root)
    if not r.is_dir():
        return []
    return sorted(p.name for p in r.iterdir() if (p / MANIFEST).is_file())


def resolve_dataset(name_or_path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path:
    """Folder of a prepared dataset given its name under the data root, or a path to it.

    With no name and exactly one prepared dataset under the root, that one is used.
    """
    r = data_root(root)
    if name_or_path is None:
        names = list_prepared(r)
        if len(names) == 1:
            return r / names[0]
        if not names:
            raise DatasetError(
                f"no prepared dataset under {r}: run `grefel prepare DATASET RAW` first "
                f"(or set --data-root / {ENV_DATA_ROOT})"
            )
        raise DatasetError(f"several prepared datasets under {r} ({', '.join(names)}): pick one with --dataset NAME")
    p = Path(name_or_path).expanduser()
    if (p / MANIFEST).is_file():
        return p
    if (r / str(name_or_path) / MANIFEST).is_file():
        return r / str(name_or_path)
    names = list_prepared(r)
    hint = f"prepared here: {', '.join(names)}" if names else "none is prepared yet: run `grefel prepare`"
    raise DatasetError(
        f"no prepared dataset '{name_or_path}' under {r} ({hint}); "
        f"use --data-root or {ENV_DATA_ROOT} to point elsewhere"
    )


MAX_NAME_BYTES = 200  # a name plus its suffix (.h5, .parquet) stays under the usual 255-byte file-name limit


def plain_name(value, what: str) -> str:
    """``value`` checked as a plain name: one file or folder name that stays inside its folder.

    Run names, study run names, label-set and split-set names become file or folder names under a
    folder the user chose (``runs/<name>``, ``labels/<name>.h5``). They are checked where they are
    read (the command line, a study file, a study folder's study.json), so a name can never reach
    outside its folder: an absolute path, a ``/``, ``..``, a leading ``.`` (a hidden file) or a control
    character is a one-line :class:`GrefelError` saying ``what`` it names.
    """
    if not isinstance(value, str) or not value.strip():
        raise GrefelError(f"{what} must be a non-empty name (got {value!r})")
    if "/" in value or "\\" in value or value.startswith((".", "~")) or any(ord(c) < 32 for c in value):
        raise GrefelError(
            f"{what} {value!r} is not a plain name: it must stay inside its folder, so no '/', '..', "
            "leading '.' or '~'; use letters, digits, '-', '_', '.'"
        )
    if len(value.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise GrefelError(f"{what} {value[:40]!r}... is longer than {MAX_NAME_BYTES} bytes: give a shorter name")
    return value
