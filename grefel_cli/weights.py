"""`grefel weights add|list|verify`: the pretrained-weights store under <data root>/weights."""

from __future__ import annotations

from pathlib import Path

import typer

from grefel_cli.app import _fail, _Group, app

weights_app = typer.Typer(
    cls=_Group,
    name="weights",
    help="Register pretrained weight files (IR-50, MobileFaceNet, POSTER++, facexlib detectors, the baselines' "
    "ResNets) once.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(weights_app)

_DATA_ROOT_HELP = "Data root \\[default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel]."


@weights_app.command(no_args_is_help=True)
def add(
    files: list[Path] = typer.Argument(..., help="Weight files, in any order and under any name."),
    link: bool = typer.Option(False, "--link", help="Store a symbolic link to each file instead of a copy."),
    force: bool = typer.Option(False, "--force", help="Replace a different file already registered for a kind."),
    data_root: Path | None = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
):
    """Identify each file by its content, check it against the model and store it.

    Recognised: face.evoLVe's backbone_ir50_ms1m_epoch120.pth and POSTER++'s ir50.pth (IR-50),
    mobilefacenet_model_best.pth.tar (MobileFaceNet), a trained POSTER++ checkpoint, and facexlib's
    detection_Resnet50_Final.pth / detection_mobilenet0.25_Final.pth, and the noisy-label baselines'
    backbones resnet18_msceleb.pth, ijba_res18_naive.pth.tar and resnet50_ft_weight.pkl. Each file's
    keys and shapes are checked against the model, its sha256 recorded, and it is copied to <data
    root>/weights. A file that cannot be used gets one error line and the others still go in. `train`
    finds the IR-50 and MobileFaceNet (or POSTER++) files there, and a baseline's backbone; `prepare`
    and `predict` the detectors.
    Sources and key layouts: docs/model.md.

    [bold]Examples:[/bold]

      grefel weights add ~/Downloads/backbone_ir50_ms1m_epoch120.pth \\
        ~/Downloads/mobilefacenet_model_best.pth.tar

      grefel weights add ~/weights/*.pth --link

      grefel weights add new_ir50.pth --force
    """
    import sys

    from grefel.core.console import make_console
    from grefel.weights.verify import add_weights

    console = make_console()

    def show(r):
        if r.status in ("added", "replaced", "unchanged"):
            console.print(f"{r.status}: {r.message}", markup=False, highlight=False)
        else:
            hint = ": --force replaces it" if r.status == "exists" else ""
            print(f"Error: {r.message}{hint}", file=sys.stderr)

    results = add_weights(files, data_root, link=link, force=force, on_result=show)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@weights_app.command("list")
def list_(
    verify: bool = typer.Option(False, "--verify", help="Re-hash every file against its recorded sha256."),
    data_root: Path | None = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
):
    """Show the registered files: kind, file, sha256, coverage (model keys filled), size, state.

    [bold]Examples:[/bold]

      grefel weights list

      grefel weights list --verify
    """
    from grefel.core.console import make_console
    from grefel.weights.store import list_weights

    listing = list_weights(data_root, verify=verify)
    make_console().print(listing)
    if not listing.ok:
        bad = [f"{e.kind} ({listing.state(e)})" for e in listing.entries if listing.state(e) != "ok"]
        _fail(f"{', '.join(bad)} in {listing.store}: add those files again with `grefel weights add FILE --force`")


@weights_app.command()
def verify(data_root: Path | None = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP)):
    """Re-hash every registered file and compare it with its recorded sha256 (as `list --verify`)."""
    list_(verify=True, data_root=data_root)
