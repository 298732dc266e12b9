"""The noisy-label baselines' pretrained backbones: which file a run starts from, and loading it.

Each baseline preset starts from its paper's backbone file (:data:`grefel.weights.catalog.BACKBONE_SOURCES`):
``full`` (ResNet-18) from the MS-Celeb-1M ResNet-18 ``resnet18_msceleb.pth`` (kind ``resnet18``) or
DREAM's ``ijba_res18_naive.pth.tar`` (``resnet18-dream``; SCN's paper's, preferred for SCN),
``resnet50`` from EAC's VGGFace2 ``resnet50_ft_weight.pkl`` (``resnet50-vggface2``); ``tiny`` from
nothing. Files are the user's: given as ``backbone_weights`` or registered with ``grefel weights
add`` (identified by their keys, :func:`grefel.weights.verify.identify`). Without one a run refuses
to start, unless ``from_scratch``.

Loading fills the backbone (``model.backbone``, torchvision key names) and reports every key: the
pretraining task's classifier (``fc``, DREAM's ``feature``) is unused; anything missing, unexpected or
of another shape refuses the load unless ``allow_partial``. A file for another backbone (a ResNet-50
for a ResNet-18 preset, an IR-50, a grefel checkpoint ...) is a one-line error saying which file fits.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from grefel.core.errors import CheckpointError
from grefel.weights.catalog import BACKBONE_KINDS, BACKBONE_SOURCES, PUBLISHED
from grefel.weights.store import MissingWeightsError, registered_file, store_dir
from grefel.weights.verify import LoadReport, identify, match_backbone, read_state_dict


def backbone_sources(method: str, preset: str) -> tuple[str, ...]:
    """The backbone kinds that initialise ``method`` on ``preset``, its paper's first (``()``: none, ``tiny``)."""
    return BACKBONE_SOURCES.get((method, preset)) or BACKBONE_SOURCES.get(("*", preset), ())


def plan_backbone(
    method: str,
    preset: str,
    data_root: str | os.PathLike | None = None,
    given: str | os.PathLike | None = None,
    scratch_hint: str = "or train from random weights on purpose (from_scratch)",
) -> Path | None:
    """The backbone file ``method`` on ``preset`` starts from: ``given``, else the first registered kind of
    :func:`backbone_sources`; None for presets without published weights (``tiny``). Raises
    :class:`MissingWeightsError` (one line: what to get, where, how to register it) when none is there."""
    if given:
        return Path(given).expanduser()
    kinds = backbone_sources(method, preset)
    if not kinds:
        return None
    for kind in kinds:
        found = registered_file(kind, data_root)
        if found is not None:
            return found
    store = store_dir(data_root)
    name, where = PUBLISHED[kinds[0]]
    also = f" ({' or '.join(PUBLISHED[k][0] for k in kinds[1:])} also serves)" if kinds[1:] else ""
    raise MissingWeightsError(
        f"method {method} on the {preset} preset starts from pretrained {kinds[0]} weights, and {store} has none: "
        f"get {name} from {where}, register it with `grefel weights add FILE`{also}; {scratch_hint}",
        list(kinds[:1]),
        store,
    )


def load_backbone(model: nn.Module, path: str | os.PathLike, allow_partial: bool = False) -> LoadReport:
    """Load a backbone file into ``model.backbone`` (a baseline of :mod:`grefel.models.resnets`); the report.

    One-line :class:`CheckpointError` when the file is unreadable, no backbone file, a backbone of
    another architecture than the model's, or (without ``allow_partial``) does not cover the backbone.
    """
    want = model.backbone_name
    fits = [k for k, b in BACKBONE_KINDS.items() if b == want]
    sd, _ = read_state_dict(path)
    found = identify(sd)
    name = Path(path).name
    how = " or ".join(f"{PUBLISHED[k][0]}" for k in fits) or "none (train it from scratch)"
    if found is None or found[0] not in BACKBONE_KINDS:
        what = f"a {found[1]} file" if found else "no known backbone file"
        raise CheckpointError(
            f"{name} is {what}, not a backbone for method {model.method}'s {want}: it starts from {how}"
        )
    kind, fmt = found
    if BACKBONE_KINDS[kind] != want:
        raise CheckpointError(
            f"{name} is a {fmt} file, for the {BACKBONE_KINDS[kind]} backbone, but this model's backbone is "
            f"{want}: give {how}, or choose the preset of that backbone"
        )
    rep, tensors = match_backbone(kind, sd, path)
    if not rep.complete and not allow_partial:
        raise CheckpointError(
            f"{name} does not fit the {want} backbone: {rep.problems()}. Give {how}, or set allow_partial "
            "to load what matches"
        )
    result = model.backbone.load_state_dict(tensors, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # every staged key exists in the trunk
    rep.loaded = True
    return LoadReport([rep])
