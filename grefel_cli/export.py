"""`grefel export --ckpt CKPT --onnx OUT`: the whole model as one ONNX file, checked with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import app


@app.command(no_args_is_help=True)
def export(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint of a `grefel train` run (best.pt)."),
    onnx: Path | None = typer.Option(None, "--onnx", help="ONNX file to write \\[default: beside the checkpoint]."),
):
    """Export a checkpoint's whole model (encoder and reliability balancing head) as ONNX.

    The graph takes normalised faces (N, 3, crop, crop) and returns the primary distribution (eq. 9), the corrected one
    (eq. 19) and the embedding. The class names and the preprocessing (face size, crop, mean/std) are in the model's
    metadata. Before the file is put in place, ONNX Runtime is checked against PyTorch on random inputs. `grefel predict
    --onnx` and grefel.load() run the file without torch.

    [bold]Examples:[/bold]

      grefel export --ckpt runs/rafdb-full-clean/best.pt --onnx model.onnx

      grefel predict --onnx model.onnx photo.jpg
    """
    from grefel.core.console import make_console
    from grefel.inference.export import export_onnx

    res = export_onnx(ckpt, onnx)
    console = make_console()
    diff = max(res.max_abs_diff.values())
    console.print(
        f"wrote {res.path} ({res.bytes / 2**20:.1f} MiB): {len(res.classes)} classes ({', '.join(res.classes)}), "
        f"faces {res.image_size}x{res.image_size} cropped to {res.crop}; ONNX Runtime vs PyTorch: "
        f"max |difference| {diff:.1e}",
        highlight=False,
    )
