"""Each training method's recipe: the values its recipe-dependent settings take when left unset.

``grefel train --method eac`` trains EAC with EAC's own learning rate, schedule, batch size, epochs
and augmentation, unless a setting is given (then that value, for every method alike: a study that
sets ``lr`` in ``[train]`` trains every method with it). The recipe-dependent settings are the
TrainConfig fields whose default is None ("the method's recipe"): :data:`RECIPE_FIELDS`. GReFEL's
row is the paper's section 4.1; the baselines' rows are their authors' code (sources in
docs/training.md, "Noisy-label baselines"). Plain data, no torch: the CLI and the study file read it.

Settings that belong to one method (GReFEL's loss and head, each baseline's own terms) are refused
with another method, so that a setting never silently does nothing (:func:`method_conflict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grefel.core.recipe import DEFAULT_EPOCHS

RECIPE_FIELDS = ("lr", "gamma", "weight_decay", "batch_size", "epochs", "refine", "flip", "rotation", "color")
_BASELINE = dict(gamma=0.9, weight_decay=1e-4, refine=False, rotation=0.0, color=0.0)  # all three codes
RECIPES: dict[str, dict[str, Any]] = {
    # section 4.1: Adam 3e-4, decay 0.995, 1000 epochs of refined draws, heavy augmentation
    "grefel": dict(
        lr=3e-4,
        gamma=0.995,
        weight_decay=0.0,
        batch_size=128,
        epochs=DEFAULT_EPOCHS,
        refine=True,
        flip=0.5,
        rotation=10.0,
        color=0.2,
    ),
    # the papers' "Baseline" rows: RUL's recipe without RUL's head (ResNet-18, MS-Celeb-1M)
    "ce": dict(_BASELINE, lr=2e-4, batch_size=64, epochs=60, flip=0.25),
    # EAC src/main.py: Adam 1e-4 (ResNet-50), 2e-4 for ResNet-18 (README, issue #3); batch 32, 60 epochs;
    # the first view is never flipped (the second pass sees the flipped image)
    "eac": dict(_BASELINE, lr={"resnet50": 1e-4, "default": 2e-4}, batch_size=32, epochs=60, flip=0.0),
    # SCN src/train.py: Adam at its default 1e-3, batch 64, 70 epochs, flip or noise with p 0.5
    "scn": dict(_BASELINE, lr=1e-3, batch_size=64, epochs=70, flip=0.25),
    # RUL src/main.py: Adam 2e-4 (classifier 2e-3), batch 64, 60 epochs, flip or noise with p 0.5
    "rul": dict(_BASELINE, lr=2e-4, batch_size=64, epochs=60, flip=0.25),
}
GREFEL_ONLY = (
    "reliability",
    "num_anchors",
    "delta",
    "dropout",
    "drop_path",
    "ir50",
    "mobilefacenet",
    "poster",
    "lambda_cls",
    "lambda_anchor",
    "lambda_center",
    "label_smoothing",
    "aux_warmup",
    "correction_warmup",
)
METHOD_ONLY = {  # settings of one baseline each
    "eac_lambda": "eac",
    "scn_beta": "scn",
    "scn_margin": "scn",
    "scn_relabel_margin": "scn",
    "scn_relabel_epoch": "scn",
    "rul_fc_lr": "rul",
}


def recipe_values(method: str, preset: str) -> dict[str, Any]:
    """The recipe of ``method`` on ``preset``: a value for each of :data:`RECIPE_FIELDS`."""
    out = {}
    for key, value in RECIPES[method].items():
        out[key] = value.get(preset, value["default"]) if isinstance(value, dict) else value
    return out


def method_conflict(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> str | None:
    """Why the settings ``values`` do not fit their method (None when they do): a setting of
    another method set away from its default, or a weight file of the other kind."""
    method = values.get("method") or "grefel"
    for key, owner in METHOD_ONLY.items():
        if owner != method and key in values and values[key] != defaults.get(key):
            return f"{key} is a setting of method {owner}, and this run trains {method}: leave it unset"
    if method != "grefel":
        for key in GREFEL_ONLY:
            if key in values and values[key] != defaults.get(key):
                return (
                    f"{key} is a GReFEL setting and method {method} does not use it: leave it unset "
                    f"(method {method}'s own settings are {', '.join(_own(method)) or 'none'})"
                )
    elif values.get("backbone_weights"):
        return (
            "backbone_weights is the weight file of a baseline method (ce, eac, scn, rul): give GReFEL's as "
            "ir50 / mobilefacenet / poster"
        )
    return None


def _own(method: str) -> list[str]:
    return [k for k, owner in METHOD_ONLY.items() if owner == method] + ["backbone_weights"]
