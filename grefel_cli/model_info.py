"""`grefel model-info --preset full`: parameters (trainable / frozen) and FLOPs per module group."""

from __future__ import annotations

import typer

from grefel_cli.app import app


@app.command("model-info")
def model_info(
    preset: str = typer.Option("full", "--preset", "-p", help="Model preset: full (the paper) or tiny (2-core CPU)."),
    num_classes: int = typer.Option(7, "--num-classes", "-c", help="Number of expression classes."),
    reliability: str = typer.Option(
        "both", "--reliability", help="Reliability balancing: both, anchors, mhsa or none (Table 2)."
    ),
    num_anchors: int = typer.Option(10, "--num-anchors", "-k", help="Anchors per class K."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON instead of a table."),
):
    """Print the parameters (trainable / frozen) and forward FLOPs of a model preset, per module group.

    FLOPs are counted by torch's FlopCounterMode for one 112 x 112 image (what both streams see);
    the paper's "GFLOPs" are multiply-accumulates, i.e. half of torch's count. The full encoder
    has POSTER++'s 43.75M parameters, 0.91M of them the frozen landmark stream.

    [bold]Examples:[/bold]

      grefel model-info --preset full

      grefel model-info --preset tiny --num-classes 8

      grefel model-info --preset full --reliability none --json
    """
    from grefel.core.console import make_console
    from grefel.models.info import model_summary

    summary = model_summary(preset, num_classes, reliability=reliability, num_anchors=num_anchors)
    console = make_console()
    if json_out:
        console.print_json(data=summary.as_dict())
    else:
        console.print(summary)
