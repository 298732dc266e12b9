"""The predictions file `grefel evaluate` writes and `grefel report` reads: one Parquet table.

One row per evaluated sample. Any Parquet reader opens it (pandas, polars, DuckDB, R arrow, Spark);
vector columns are fixed-size lists of float32, one value per class in ``classes`` order.

==================  ===============  ===========================================================
column              type             meaning
==================  ===============  ===========================================================
``index``           int64            global sample index in the prepared dataset
``source``          string           raw item the face came from
``group``           string           subject / video / character id ('' when unknown)
``split``           string           split the sample was evaluated in
``label``           int64            clean label (index into ``classes``; -1: none)
``label_noisy``     int64            label in the label set used (only when one was used)
``<attribute>``     int64            per-image attributes (RAF-DB ``gender``, ``race``, ``age``; -1 unknown)
``pred_primary``    int64            argmax of the primary distribution l (eq. 9)
``pred_corrected``  int64            argmax of the corrected distribution L_final (eq. 19)
``conf_primary``    float32          c_l = C_f(l) (eq. 10-11)
``conf_geometric``  float32          c_g = C_f(t_g)
``conf_attentive``  float32          c_a = C_f(t_a)
``conf_correction`` float32          c_t = C_f(t)
``primary``         list<float32>    primary distribution l, eq. 9
``geometric``       list<float32>    anchor (geometric) correction t_g, eq. 15
``attentive``       list<float32>    attentive correction t_a, eq. 17
``correction``      list<float32>    combined correction t, eq. 18
``corrected``       list<float32>    corrected distribution L_final, eq. 19
``embedding``       list<float32>    encoder embedding e
==================  ===============  ===========================================================

The file's key-value metadata ``grefel`` holds JSON: classes, dataset, split, label set,
checkpoint path (relative to the file's folder) and sha256, model and training configuration,
attribute code names.

Reading it without grefel (pandas): ``df = pd.read_parquet(p)``; ``np.stack(df["corrected"])``
gives the (N, C) matrix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grefel.core.errors import GrefelError
from grefel.core.io import atomic_path, json_default
from grefel.training.config import TrainConfig

PREDICTIONS_FORMAT = "grefel-predictions"
PREDICTIONS_FORMAT_VERSION = 1
META_KEY = b"grefel"
DISTRIBUTIONS = ("primary", "geometric", "attentive", "correction", "corrected")
CONFIDENCES = ("conf_primary", "conf_geometric", "conf_attentive", "conf_correction")


@dataclass
class Predictions:
    """A predictions file in memory: scalar columns as a DataFrame, vector columns as arrays."""

    table: Any  # pandas.DataFrame of the scalar columns
    arrays: dict[str, np.ndarray]  # name -> (N, C) or (N, D) float32
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def attributes(self) -> list[str]:
        return list(self.meta.get("attributes", []))

    def __len__(self) -> int:
        return len(self.table)


def write_predictions(path: str | os.PathLike, columns: dict[str, np.ndarray], meta: dict) -> Path:
    """Write a predictions table atomically. 1-D arrays become columns, 2-D fixed-size lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, names = [], []
    for name, a in columns.items():
        a = np.asarray(a)
        if a.ndim == 2:
            flat = pa.array(np.ascontiguousarray(a, dtype=np.float32).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, a.shape[1]))
        elif a.dtype.kind in "OUS":
            arrays.append(pa.array(a.astype(str).tolist(), type=pa.string()))
        else:
            arrays.append(pa.array(a))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)
    meta = {"format": PREDICTIONS_FORMAT, "format_version": PREDICTIONS_FORMAT_VERSION, **meta}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=_json_default).encode()})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_predictions_meta(path: str | os.PathLike) -> dict:
    """Only the metadata of a predictions file (cheap: reads the footer)."""
    import pyarrow.parquet as pq

    try:
        md = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as e:
        raise GrefelError(
            f"predictions file {path} cannot be read ({str(e)[:120]}): delete it and run `grefel evaluate` again"
        ) from None
    if META_KEY not in md:
        raise GrefelError(
            f"{path} is not a grefel predictions file (no '{META_KEY.decode()}' metadata): "
            "write it with `grefel evaluate`"
        )
    return json.loads(md[META_KEY])


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Load a predictions file written by :func:`write_predictions`."""
    import pyarrow.parquet as pq

    meta = read_predictions_meta(path)
    if int(meta.get("format_version", 0)) > PREDICTIONS_FORMAT_VERSION:
        raise GrefelError(
            f"{path} was written by a newer grefel (predictions format {meta['format_version']}): upgrade grefel"
        )
    table = pq.read_table(path)
    arrays = {}
    scalar = []
    for name in table.column_names:
        col = table.column(name)
        if hasattr(col.type, "list_size"):
            values = col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            arrays[name] = values.reshape(len(table), col.type.list_size).astype(np.float32, copy=False)
        else:
            scalar.append(name)
    return Predictions(table=table.select(scalar).to_pandas(), arrays=arrays, meta=meta, path=Path(path))


def training_settings(meta: dict) -> dict:
    """The training settings of the run a predictions file evaluated, by TrainConfig field name: as
    its checkpoint recorded them (``config``), then ``model_config`` (the preset, K, the reliability
    setup), then TrainConfig's defaults for what neither records. ``labels`` is the label set the run
    trained on (``clean`` for the clean labels). Never the built model's own anchor count: a model
    without anchors (reliability ``none`` or ``mhsa``) keeps the K its configuration asked for."""
    defaults = asdict(TrainConfig())
    model_cfg, cfg = meta.get("model_config") or {}, meta.get("config") or {}
    out = {**defaults, **{k: v for k, v in model_cfg.items() if k in defaults}}
    out.update({k: v for k, v in cfg.items() if k in defaults})
    out["labels"] = out.get("labels") or meta.get("train_label_set") or "clean"
    return out


def _json_default(o: Any) -> Any:
    """Like :func:`grefel.core.io.json_default`, but lenient: tensors as lists, anything else as its str."""
    try:
        return json_default(o)
    except TypeError:
        return o.tolist() if hasattr(o, "tolist") else str(o)  # torch tensors in a config
