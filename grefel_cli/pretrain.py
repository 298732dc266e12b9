"""`grefel pretrain OUT`: pretrained tiny-preset weights (identity IR, landmark MobileFaceNet, the whole
encoder) from synthetic faces of characters the demo never sees.

The options are not written here: each is a field of ``grefel.training.config.PretrainConfig``,
turned into a Typer option by ``grefel_cli._settings``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from grefel.training.config import PretrainConfig
from grefel_cli import _settings
from grefel_cli.app import app


def _with_out_and_options(fn):
    out = inspect.Parameter(
        "out",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Argument(
            ..., metavar="OUT", help="Folder for the weight files and pretrain.json (created if missing)."
        ),
        annotation=Path,
    )
    fn.__signature__ = inspect.Signature([out, *_settings.options(PretrainConfig)])
    return fn


@app.command()
@_with_out_and_options
def pretrain(out: Path, **params):
    """Pretrain the tiny preset on synthetic faces of characters the demo never sees.

    Stage 1: the image stream (tiny IR) learns face identity over --characters characters
    (CosFace), the analogue of IR-50's face recognition; the landmark stream (tiny MobileFaceNet)
    learns to regress 22 facial landmarks, the analogue of MobileFaceNet's landmark detection.
    Writes OUT/tiny-ir.pth and OUT/tiny-mobilefacenet.pth, which `grefel train --preset tiny --ir50
    ... --mobilefacenet ...` loads. With --encoder-task expression, stage 2 trains the whole encoder
    on the expressions of those characters and writes OUT/tiny-encoder.pth: the file grefel ships,
    which the tiny preset starts from by default (register another with `grefel weights add`).
    OUT/pretrain.json records the settings, the times, the pretext metrics per epoch and every
    file's sha256 (the same settings on the same machine and torch give the same bytes).

    [bold]Examples:[/bold]

      grefel pretrain pretrained/ --encoder-task expression

      grefel pretrain /tmp/pt --characters 100 --epochs 2

      grefel pretrain enc/ --streams pretrained/ --encoder-task identity
    """
    from grefel.training.pretrain import pretrain as run

    result = run(out, _settings.build(PretrainConfig, params))
    for name, f in result.metrics["files"].items():
        typer.echo(f"{result.folder / name}: {f['bytes'] / 2**20:.2f} MiB, sha256 {f['sha256']}")
    typer.echo(
        f"took {result.metrics['seconds']['total']:.0f} s; settings and metrics in {result.folder / 'pretrain.json'}"
    )
