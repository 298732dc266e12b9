"""`grefel train --dataset NAME`: train GReFEL with the paper's recipe; every part of it a flag.

The options are not written here: each is a field of ``grefel.training.config.TrainConfig`` (help,
panel, range, choices), turned into a Typer option by ``grefel_cli._settings``.
"""

from __future__ import annotations

import dataclasses
import re
import sys

import typer

from grefel.core.errors import GrefelError
from grefel.core.stop import EXIT_STOPPED, StopRequested
from grefel.training.config import TrainConfig, resumable_settings
from grefel_cli import _settings
from grefel_cli.app import app

_RESUME_TAKES = ", ".join(_settings.flags(TrainConfig, [n for n in resumable_settings() if n != "resume"]))


@app.command()
@_settings.with_options(TrainConfig, {"resume": f"A resume takes only {_RESUME_TAKES}."})
def train(**params):
    """Train GReFEL on a prepared dataset; writes a run folder with best.pt and last.pt.

    The full preset starts from the pretrained IR-50 and MobileFaceNet registered with `grefel weights
    add` (or given with --ir50 / --mobilefacenet / --poster) and prints one line per file loaded; without
    them it refuses to start, unless --from-scratch.

    Defaults are the paper's recipe (section 4.1 and supplement): Adam lr 3e-4, exponential
    decay 0.995, lambda 1/1/1, K = 10, label smoothing 0.11 (Table 8's T = 11), dropout 0.5,
    1000 epochs of B x N_cls refined images (B = 500, N_pg = 512), random crop / flip / rotation
    / colour / random erasing (on the GPU when training there); docs/training.md gives the source
    of each. The best checkpoint is chosen on the validation split, never on test. A stopped run
    continues with --resume, with its own settings. SIGTERM or SIGUSR2 (a scheduler preempting or
    requeueing the job) stops it between two steps with last.pt kept, exit status 143. Multi-GPU /
    multi-node: start the same command under torchrun (see docs/training.md).

    --method ce|eac|scn|rul trains a published noisy-label method (plain cross-entropy, EAC, SCN,
    RUL) in the same harness instead, on its paper's backbone (ResNet-18; --preset resnet50 or tiny)
    from its registered weight file, with its own recipe for every setting left unset.

    [bold]Examples:[/bold]

      grefel weights add ir50.pth mobilefacenet_model_best.pth.tar

      grefel train --dataset rafdb

      grefel train --dataset rafdb --from-scratch

      grefel train --dataset ferg --preset tiny --epochs 20 --per-class 100

      grefel train --dataset affwild2 --reliability none \\
        --lambda-anchor 0 --lambda-center 0

      grefel train --dataset rafdb --labels sym20-s0 --num-anchors 4 \\
        --label-smoothing 0.05

      grefel train --dataset jaffe --split-set fold3 --no-augment

      grefel train --dataset rafdb --labels eac-noise20 --method eac

      grefel train --resume runs/rafdb-full-clean-20250101-120000

      torchrun --nproc_per_node 8 -m grefel_cli.main train \\
        --dataset affectnet8 --batch-size 512
    """
    from grefel.training.loop import train as run

    cfg = _settings.build(TrainConfig, params)
    if cfg.resume:
        fixed = [n for n in _settings.given(TrainConfig, params) if n not in resumable_settings()]
        if fixed:
            raise GrefelError(
                f"--resume continues a run with its own settings, so {', '.join(_settings.flags(TrainConfig, fixed))} "
                f"cannot change; a resume takes only {_RESUME_TAKES}: "
                "drop the others, or start a new run"
            )
    if cfg.from_scratch and (cfg.ir50 or cfg.mobilefacenet or cfg.poster):
        raise GrefelError(
            "--from-scratch starts from random weights: drop it, or drop --ir50 / --mobilefacenet / --poster"
        )
    try:
        run(cfg)
    except GrefelError as e:
        raise GrefelError(_in_flags(str(e))) from None
    except StopRequested as e:  # SIGTERM / SIGUSR2: saved, to be continued (a scheduler requeues the job)
        print(e.message, file=sys.stderr)
        raise typer.Exit(EXIT_STOPPED) from None


def _in_flags(message: str) -> str:
    """The library names settings by field ("set allow_partial"); the command says "pass --allow-partial"."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    return re.sub(
        r"\bset (\w+)",
        lambda m: f"pass {_settings.flags(TrainConfig, [m[1]])[0]}" if m[1] in fields else m[0],
        message,
    )
