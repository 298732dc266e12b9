"""Readers of raw datasets exactly as their users receive them: one module per dataset.

A reader finds its layout under the RAW folder (or says which layouts it looked for), then yields
one :class:`~grefel.data.raw.base.RawItem` per raw image, in a deterministic order, or a
:class:`~grefel.data.raw.base.Skip` with its reason for a row it cannot use (malformed row, label
outside the protocol...). Labels come from the dataset's definition (``datasets/<id>.toml``), never
from sorted folder names. Images are read later, in worker processes, by
:meth:`~grefel.data.raw.base.RawReader.load_image`, so listing stays cheap and streams.

This module is the registry (:func:`open_reader`); what the readers share is in :mod:`.base`.
"""

from __future__ import annotations

import os

from grefel.core.errors import DatasetError
from grefel.data.definitions import load_definition
from grefel.data.raw import affectnet, affwild2, ferg, ferplus, jaffe, rafdb
from grefel.data.raw.base import RawReader

READERS: dict[str, type[RawReader]] = {
    r.dataset: r
    for r in (
        rafdb.RafDbReader,
        affectnet.AffectNetReader,
        ferplus.FerPlusReader,
        ferg.FergReader,
        jaffe.JaffeReader,
        affwild2.AffWild2Reader,
    )
}


def reader_class(dataset: str) -> type[RawReader]:
    if dataset not in READERS:
        load_definition(dataset)  # raises the "unknown dataset" error with the list
        raise DatasetError(f"no reader for dataset '{dataset}'")
    return READERS[dataset]


def open_reader(
    dataset: str, raw: str | os.PathLike, protocol: str | None = None, align: str | None = None
) -> RawReader:
    """The reader of ``dataset`` on the raw folder ``raw`` (raises DatasetError naming the layouts looked for)."""
    return reader_class(dataset)(raw, protocol=protocol, align=align)
