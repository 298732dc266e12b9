"""`grefel predict --ckpt CKPT IMAGE_OR_DIR...`: detect, align and classify faces in photographs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from grefel_cli.app import app


@app.command(no_args_is_help=True)
def predict(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint of a `grefel train` run."),
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
    json_out: Path | None = typer.Option(
        None, "--json", help="Write all results as JSON to this file ('-' for standard output)."
    ),
    csv_out: Path | None = typer.Option(
        None, "--csv", help="Write one row per face as CSV to this file ('-' for standard output)."
    ),
    save_annotated: Path | None = typer.Option(
        None, "--save-annotated", help="Folder for copies of the images with boxes and labels drawn."
    ),
    max_faces: int | None = typer.Option(
        None, "--max-faces", help="Classify at most this many faces per image (largest first)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Faces per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda ... \\[default: cuda when available]."),
):
    """Classify every face in the given photographs and print a table.

    Faces are detected and aligned exactly as `grefel prepare` does, then classified; each row shows the corrected
    prediction (after reliability balancing, eq. 19) and the primary one (eq. 9). Unreadable images and images without a
    face are reported one line each; the rest go on. Exit status 1 when no face at all was classified.

    [bold]Examples:[/bold]

      grefel predict --ckpt runs/rafdb-full-clean/best.pt photo.jpg

      grefel predict --ckpt best.pt ~/photos --json results.json \\
        --save-annotated annotated/

      grefel predict --ckpt best.pt crops/ --align none --csv - > results.csv
    """
    import csv
    import json

    from rich.table import Table

    from grefel.console import make_console
    from grefel.predict import predict as run
    from grefel.predict import records_table

    to_stdout = "-" in (str(json_out), str(csv_out))
    console = make_console(stderr=to_stdout)
    results, classes = run(
        ckpt,
        inputs,
        align=align,
        weights_dir=weights_dir,
        device=device,
        batch_size=batch_size,
        max_faces=max_faces,
        save_annotated=save_annotated,
    )
    faces = [r for r in results if r.error is None]
    table = Table(title=f"{len(faces)} face(s) in {len({r.file for r in results})} file(s)")
    # conf: the corrected distribution's top probability; primary: the MLP head's top class (without RB)
    for col in ("file", "face", "top class", "conf", "primary", "changed"):
        table.add_column(
            col, justify="right" if col in ("face", "conf") else "left", overflow="fold", no_wrap=col != "file"
        )
    for r in faces:
        table.add_row(
            _shown(r.file),
            str(r.face),
            r.top_class,
            f"{r.confidence:.3f}",
            f"{r.primary_class} {r.primary_confidence:.3f}",
            "yes" if r.changed else "",
        )
    console.print(table)
    for r in results:
        if r.error is not None:
            console.print(f"[red]{r.file}[/red]: {r.error}", highlight=False)

    if json_out is not None:
        text = json.dumps(
            {
                "checkpoint": str(ckpt),
                "classes": classes,
                "align": align,
                "faces": [r.as_dict() for r in faces],
                "errors": [{"file": r.file, "error": r.error} for r in results if r.error is not None],
            },
            indent=2,
        )
        _write(json_out, text + "\n")
    if csv_out is not None:
        import io

        rows = records_table(results)
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for row in rows for k in row))
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        _write(csv_out, buf.getvalue())
    if save_annotated is not None:
        console.print(f"annotated images: {save_annotated}")
    if not faces:
        raise typer.Exit(1)


def _shown(path: str) -> str:
    """A file as the table shows it: relative to the working directory when it lies below it."""
    import os

    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _write(path: Path, text: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text)
        return
    from grefel.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
