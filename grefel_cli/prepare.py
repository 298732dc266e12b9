"""`grefel prepare DATASET RAW`: raw dataset as distributed -> aligned faces in HDF5 shards."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command(no_args_is_help=True)
def prepare(
    dataset: str = typer.Argument(..., help="rafdb, affectnet, ferplus, ferg, jaffe or affwild2."),
    raw: Path = typer.Argument(
        ..., help="Folder where the dataset was unpacked, as distributed (a .zip works for JAFFE)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Prepared folder \\[default: <data root>/<name>]."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."
    ),
    protocol: str | None = typer.Option(
        None,
        "--protocol",
        help="Class protocol: 7 or 8 for affectnet (default 8, named affectnet7/affectnet8); "
        "affwild2 reads it from the annotations.",
    ),
    align: str | None = typer.Option(
        None,
        "--align",
        help="none | landmarks | retinaface-onnx | facexlib-resnet50 | facexlib-mobile0.25 "
        "\\[default: per dataset, see docs/prepare.md].",
    ),
    weights_dir: Path | None = typer.Option(
        None,
        "--weights-dir",
        help="Folder holding facexlib's detection_*.pth files \\[default: those of `grefel weights add`].",
    ),
    size: int = typer.Option(
        128,
        "--size",
        min=16,
        max=1024,
        metavar="<int>",
        help="Stored face size in pixels (the 112 template scaled by size/112).",
    ),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes for decoding and alignment."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Detector CPU threads per worker, in one lane (default: one worker runs one lane per core, at most 4, "
        "each detector run on 1 thread; several workers use 1 thread each).",
    ),
    shard_items: int = typer.Option(1024, "--shard-items", min=1, help="Raw items per shard (bounds the shard size)."),
    compression: str = typer.Option("none", "--compression", help="none or gzip (gzip: ~2x smaller, slower reads)."),
    device: str = typer.Option("cpu", "--device", help="Device of the facexlib detectors (cpu, cuda)."),
    force: bool = typer.Option(
        False,
        "--force",
        "--overwrite",
        help="Prepare again from scratch, replacing the folder's shards, instead of resuming them or "
        "refusing a folder prepared from another raw folder or with other options.",
    ),
):
    """Read a raw dataset exactly as distributed, align its faces and write HDF5 shards.

    Official splits, group ids (subject / video / character) and RAF-DB's gender, race and age are
    kept per image; unusable items are listed with their reason in skipped.csv (a label line that
    repeats an image: the first is kept). An interrupted run resumes where it stopped when run
    again from the same raw folder with the same options; anything else is refused unless --force.
    Layouts, defaults and the schema: docs/prepare.md.

    [bold]Examples:[/bold]

      grefel prepare rafdb ~/data/RAF-DB/basic

      grefel prepare affectnet ~/data/AffectNet --protocol 7 --workers 4

      grefel prepare ferplus ~/data/FERPlus --data-root /scratch/grefel

      grefel prepare jaffe ~/Downloads/jaffe.zip --align facexlib-resnet50 \\
        --weights-dir ~/weights

      grefel prepare ferg ~/data/FERG_DB_256 --out /tmp/ferg --force
    """
    _run(dict(locals()))


def _run(options: dict) -> None:
    """Every option but --weights-dir is an argument of the same name of the library function;
    a facexlib detector's weight file is found here (--weights-dir, else the weights store)."""
    from grefel.data.align import FACEXLIB_NETWORKS
    from grefel.data.prepare import prepare
    from grefel.weights.store import detector_weights

    weights_dir = options.pop("weights_dir")
    if options["align"] in FACEXLIB_NETWORKS:
        options["detector_weights"] = detector_weights(options["align"], weights_dir, options["data_root"])
    prepare(**options)
