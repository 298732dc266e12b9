"""`grefel evaluate-video PREDICTIONS ANNOTATIONS...`: per-frame predictions scored against ABAW annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command("evaluate-video", no_args_is_help=True)
def evaluate_video(
    predictions: Path = typer.Argument(..., help="CSV or Parquet written by `grefel predict` on the videos."),
    annotations: list[Path] = typer.Argument(..., help="ABAW annotation files (<video>.txt) and/or folders of them."),
    prediction: str = typer.Option(
        "auto", "--prediction", help="auto (smoothed when present, else corrected) | corrected | primary | smoothed."
    ),
    face: str = typer.Option(
        "auto",
        "--face",
        help="Face scored per frame: auto (from _left / _right, else largest) | largest | left | right.",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores as JSON to this file."),
):
    """Score per-frame predictions with the ABAW expression challenge's F1 (macro over its classes).

    Each annotation file has a header line naming the classes, then one label per frame (-1: unlabelled); line k
    after the header is frame k - 1 of `grefel predict`'s rows. Files are matched by video name. Frames without a
    prediction of their own (not sampled, or no face) take the nearest predicted frame's; the table says how many.

    [bold]Examples:[/bold]

      grefel predict --ckpt best.pt videos/ --smooth 5 --csv frames.csv

      grefel evaluate-video frames.csv \\
        Aff-Wild2/EXPR_Classification_Challenge/Validation_Set/
    """
    from dataclasses import asdict

    from rich.table import Table

    from grefel.core.console import make_console
    from grefel.core.io import writable_file, write_json
    from grefel.evaluation.video import annotation_files
    from grefel.evaluation.video import evaluate_video as run

    if json_out is not None:  # before any work; never over the predictions or an annotation file
        writable_file(json_out, "JSON file", inputs=[predictions, *annotation_files(annotations)])
    score = run(predictions, annotations, prediction=prediction, face=face)
    console = make_console()
    table = Table(title=f"macro F1 per video ({score.prediction})")
    for col in ("video", "frames", "filled", "face", "F1", "accuracy"):
        table.add_column(col, justify="left" if col in ("video", "face") else "right")
    for v in score.videos:
        table.add_row(v.video, str(v.frames), str(v.filled), v.face, f"{v.f1:.4f}", f"{v.accuracy:.4f}")
    console.print(table)
    per_class = ", ".join(f"{c} {f:.3f}" for c, f in score.per_class_f1.items() if f is not None)
    console.print(f"per class F1: {per_class}", highlight=False)
    for u in score.unmatched:
        console.print(f"[yellow]{u}[/yellow]: no predictions for this video", highlight=False)
    console.print(
        f"[bold]F1 {score.f1:.4f}[/bold] (macro over {len(score.classes)} classes; accuracy {score.accuracy:.4f}) "
        f"on {score.frames} frames of {len(score.videos)} video(s); {score.filled} took the nearest frame's prediction"
    )
    if json_out is not None:
        write_json(json_out, asdict(score))
