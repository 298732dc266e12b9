"""`grefel predict --ckpt CKPT INPUT...`: detect, align and classify faces in photographs and videos."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from grefel_cli.app import app


@app.command(no_args_is_help=True)
def predict(
    inputs: list[Path] = typer.Argument(
        ..., help="Image and video files (mp4, avi, mov, mkv ...) and/or folders (searched recursively)."
    ),
    ckpt: Path | None = typer.Option(None, "--ckpt", help="Checkpoint of a `grefel train` run."),
    onnx: Path | None = typer.Option(
        None, "--onnx", help="A model written by `grefel export`, run by ONNX Runtime (instead of --ckpt)."
    ),
    align: str = typer.Option(
        "retinaface-onnx",
        "--align",
        help="retinaface-onnx | facexlib-resnet50 | facexlib-mobile0.25 (as `grefel prepare`), "
        "or none for already-cropped faces.",
    ),
    weights_dir: Path | None = typer.Option(
        None,
        "--weights-dir",
        help="Folder holding facexlib's detection_*.pth files \\[default: those of `grefel weights add`].",
    ),
    fps: float | None = typer.Option(
        None, "--fps", min=0.001, help="Videos: sample this many frames per second \\[default: every frame]."
    ),
    smooth: int = typer.Option(
        1, "--smooth", min=1, help="Videos: average each face's corrected distribution over its last N frames."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write all results as JSON to this file ('-' for standard output)."
    ),
    csv_out: Path | None = typer.Option(
        None, "--csv", help="Write one row per face (per frame) as CSV to this file ('-' for standard output)."
    ),
    parquet_out: Path | None = typer.Option(None, "--parquet", help="Write the same rows as Parquet to this file."),
    save_annotated: Path | None = typer.Option(
        None, "--save-annotated", help="Folder for copies with boxes and labels drawn (PNG per image, MP4 per video)."
    ),
    max_faces: int | None = typer.Option(
        None, "--max-faces", min=1, help="Classify at most this many faces per image or frame (largest first)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Faces per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda ... \\[default: cuda when available]."),
):
    """Classify every face in the given photographs and videos and print a table.

    Faces are detected and aligned exactly as `grefel prepare` does, then classified; each row shows the corrected
    prediction (after reliability balancing, eq. 19) and the primary one (eq. 9). Videos are read frame by frame
    (sampled with --fps), each face keeps a track id across frames, and --smooth averages a track's predictions over
    time; the table shows one summary line per video, --csv / --parquet one row per frame and face. Unreadable files and
    images without a face are reported one line each; the rest go on. Exit status 1 when no face at all was classified.

    [bold]Examples:[/bold]

      grefel predict --ckpt runs/rafdb-full-clean/best.pt photo.jpg

      grefel predict --ckpt best.pt ~/photos --json results.json \\
        --save-annotated annotated/

      grefel predict --ckpt best.pt crops/ --align none --csv - > results.csv

      grefel predict --onnx model.onnx clip.mp4 --fps 5 --smooth 5 \\
        --csv clip.csv --save-annotated out/
    """
    from grefel.core.console import make_console
    from grefel.inference.predict import check_outputs
    from grefel.inference.predict import predict as run

    if (ckpt is None) == (onnx is None):
        raise typer.BadParameter("pass the model as --ckpt best.pt or --onnx model.onnx (one of them)")
    model = ckpt if ckpt is not None else onnx
    outputs = {"JSON file": json_out, "CSV file": csv_out, "Parquet file": parquet_out}
    check_outputs(model, inputs, outputs, save_annotated)  # before any work: no output may replace an input
    console = make_console(stderr="-" in (str(json_out), str(csv_out)))
    options = dict(fps=fps, smooth=smooth, batch_size=batch_size, max_faces=max_faces, save_annotated=save_annotated)
    results, classes = run(model, inputs, align=align, weights_dir=weights_dir, device=device, **options)
    _print_results(console, results, classes)
    _write_outputs(results, classes, model, align, json_out, csv_out, parquet_out)
    if save_annotated is not None:
        console.print(f"annotated copies: {save_annotated}")
    if not any(r.top_class is not None for r in results):
        raise typer.Exit(1)


def _print_results(console, results, classes) -> None:
    """One row per image face, one summary row per video, then each error on one line."""
    from rich.table import Table

    from grefel.inference.video import video_summary

    faces = [r for r in results if r.top_class is not None and r.frame is None]
    videos = video_summary(results)
    if faces or not videos:
        table = Table(title=f"{len(faces)} face(s) in {len({r.file for r in results if r.frame is None})} file(s)")
        # conf: the corrected distribution's top probability; primary: the MLP head's top class (without RB)
        for col in ("file", "face", "top class", "conf", "primary", "changed"):
            just = "right" if col in ("face", "conf") else "left"
            table.add_column(col, justify=just, overflow="fold", no_wrap=col != "file")
        for r in faces:
            primary = f"{r.primary_class} {r.primary_confidence:.3f}"
            table.add_row(
                _shown(r.file), str(r.face), r.top_class, f"{r.confidence:.3f}", primary, "yes" if r.changed else ""
            )
        console.print(table)
    if videos:
        table = Table(title=f"{len(videos)} video(s)")
        for col in ("file", "frames", "with face", "faces", "tracks", "most frequent"):
            table.add_column(col, justify="left" if col in ("file", "most frequent") else "right", overflow="fold")
        for v in videos:
            top = f"{v['top_class']} {v['top_share']:.0%}" if v["top_class"] else ""
            cells = (v["frames"], v["frames_with_face"], v["faces"], v["tracks"])
            table.add_row(_shown(v["file"]), *map(str, cells), top)
        console.print(table)
    for r in results:
        if r.error is not None:
            console.print(f"[red]{_shown(r.file)}[/red]: {r.error}", highlight=False)


def _write_outputs(results, classes, model, align, json_out, csv_out, parquet_out) -> None:
    import json

    from grefel.inference.records import records_frame

    if json_out is not None:
        text = json.dumps(
            {
                "model": str(model),
                "classes": classes,
                "align": align,
                "faces": [r.as_dict() for r in results if r.error is None],
                "errors": [{"file": r.file, "error": r.error} for r in results if r.error is not None],
            },
            indent=2,
        )
        _write(json_out, text + "\n")
    if csv_out is not None or parquet_out is not None:
        df = records_frame(results, classes)
        if csv_out is not None:
            _write(csv_out, df.to_csv(index=False))
        if parquet_out is not None:
            _write(parquet_out, df)


def _shown(path: str) -> str:
    """A file as the table shows it: relative to the working directory when it lies below it."""
    import os

    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _write(path: Path, data) -> None:
    """Text (or a DataFrame, as Parquet) to ``path`` atomically, or to standard output for '-'."""
    if str(path) == "-":
        sys.stdout.write(data)
        return
    from grefel.core.errors import GrefelError
    from grefel.core.io import atomic_path

    try:
        with atomic_path(path) as tmp:
            tmp.write_text(data) if isinstance(data, str) else data.to_parquet(tmp, index=False)
    except OSError as e:
        raise GrefelError(f"cannot write {path} ({e.strerror or type(e).__name__}): choose a writable path") from None
