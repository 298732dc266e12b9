"""Load pretrained weight files into the GReFEL encoder, with a report of every key.

Four formats are recognised (key lists: docs/model.md):

- ``ir50``: IR-50 as face.evoLVe publishes it (``backbone_ir50_ms1m_epoch120.pth``: ``input_layer.*``,
  ``body.0`` ... ``body.23``, ``output_layer.*``) or as POSTER++ splits it (``ir50.pth``:
  ``body1/2/3``). face.evoLVe's ``body.i`` goes to ``body1.i`` (i < 3), ``body2.(i-3)`` (i < 7),
  ``body3.(i-7)`` (i < 21); units 21-23 (stage 4) and ``output_layer`` never run: reported unused.
- ``mobilefacenet``: the 68-point landmark net ``mobilefacenet_model_best.pth.tar`` (keys under
  ``checkpoint['state_dict']``); its landmark head ``output_layer.*`` never runs: reported unused.
- ``poster``: a whole trained POSTER++ checkpoint (keys with or without DataParallel's ``module.``
  prefix, bare or under ``state_dict``). Every encoder key maps 1:1; the modules POSTER++ builds
  but never runs, and its classifier ``VIT.head`` (GReFEL has its own MLP head, so POSTER++'s class
  order does not matter), are reported unused.
- ``tiny-encoder``: the same layout at the tiny preset's widths (``grefel pretrain``'s
  ``tiny-encoder.pth``; grefel ships one, :data:`grefel.weights.catalog.SHIPPED`).

Every key ends up in exactly one bucket: matched, missing (the encoder part the file should fill
has no value for it), unused (known never to run), unexpected (not recognised), or shape mismatch.
Anything missing, unexpected or mismatched refuses the load with a one-line error unless
``allow_partial=True``: never a silent drop (POSTER++'s own loader silently keeps only keys whose
name and shape match, which loads nothing but the stem from a face.evoLVe file).

Two more kinds are facexlib's RetinaFace detectors (``facexlib-resnet50``: ``detection_Resnet50_Final.pth``,
``facexlib-mobile0.25``: ``detection_mobilenet0.25_Final.pth``), matched against facexlib's own network by
:func:`match_detector`. :func:`identify` tells the five kinds apart by their keys alone (whatever the
file is called) and :func:`check_weight_file` identifies and verifies a file in one call (what
``grefel weights add`` runs, :mod:`grefel.weights.store`).

Files are read with ``torch.load(..., weights_only=True)``. Trained POSTER++ checkpoints also pickle
the authors' ``RecorderMeter`` objects, which ``weights_only`` refuses; such non-tensor objects are
replaced by an inert placeholder (nothing of theirs is imported or run) and listed in the report.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import pickle
import re
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from grefel.core.errors import CheckpointError, GrefelError, torch_load_failure
from grefel.core.io import regular_file, sha256_file
from grefel.models.grefel import create_model
from grefel.models.presets import preset_kwargs
from grefel.models.resnets import create_backbone
from grefel.weights.catalog import (
    BACKBONE_KINDS,
    DETECTOR_KINDS,
    FACEXLIB_WEIGHTS,
    HOW_TO_GET,
    SHIPPED_FOLDER,
)
from grefel.weights.store import (
    AddResult,
    WeightEntry,
    install_file,
    locked_store,
    read_entries,
    store_dir,
    write_entries,
)

IR50_LAYOUT = (3, 4, 14, 3)  # units per stage of face.evoLVe's IR-50

_UNUSED = {
    "ir50": [(r"^output_layer\.", "IR-50 output layer (never run)"), (r"^body4\.", "IR-50 stage 4 (never run)")],
    "mobilefacenet": [(r"^output_layer\.", "landmark head (never run)")],
    "poster": [
        (r"^face_landback\.output_layer\.", "landmark head (never run)"),
        (r"^ir_back\.output_layer\.", "IR-50 output layer (never run)"),
        (r"^VIT\.(patch_embed|eca_block|CON1|IRLinear1|IRLinear2)\.", "POSTER++ module that never runs"),
        (r"^VIT\.blocks\.\d+\.conv\.", "POSTER++ module that never runs"),
        (r"^VIT\.head\.", "POSTER++ classifier (GReFEL uses its own MLP head)"),
    ],
}
_UNUSED["tiny-encoder"] = _UNUSED["poster"]
_TARGET_PREFIX = {"ir50": "ir_back.", "mobilefacenet": "face_landback.", "poster": "", "tiny-encoder": ""}
_WHOLE_ENCODER = ("poster", "tiny-encoder")  # kinds that fill every encoder key
_PRESET_OF = {"tiny-encoder": "tiny"}  # kinds that fit one preset only (the others: the full preset)


@dataclass
class SourceReport:
    """What happened to the keys of one weight file."""

    kind: str
    path: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: dict[str, str] = field(default_factory=dict)  # file key -> why it is not used
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)  # file key -> "file shape vs model shape"
    ignored_objects: list[str] = field(default_factory=list)  # non-tensor pickled classes replaced by a placeholder
    loaded: bool = False
    format: str = ""  # what the file was recognised as (identify), e.g. "face.evoLVe IR-50"

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def total(self) -> int:
        """Keys of the model part this file fills (matched + missing + mismatched)."""
        return len(self.matched) + len(self.missing) + len(self.mismatched)

    @property
    def coverage(self) -> str:
        """``matched/total`` keys of the model part this file fills, e.g. ``292/292`` (IR-50)."""
        return f"{len(self.matched)}/{self.total}"

    def problems(self) -> str:
        """Why the file does not fit, in a few words ('' when complete)."""
        out = []
        if self.mismatched:
            k, why = next(iter(self.mismatched.items()))
            out.append(f"{len(self.mismatched)} shape mismatches (e.g. {k}: {why})")
        if self.missing:
            part = (
                "detector" if self.kind in DETECTOR_KINDS else "backbone" if self.kind in BACKBONE_KINDS else "encoder"
            )
            out.append(f"{len(self.missing)} {part} keys missing (e.g. {self.missing[0]})")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected keys (e.g. {self.unexpected[0]})")
        return "; ".join(out)

    def line(self) -> str:
        """One line for logs: what the file is and its coverage, e.g. for each source ``train`` loads."""
        what = f" ({self.format})" if self.format else ""
        unused = f", {len(self.unused)} file keys unused (never run)" if self.unused else ""
        return f"{self.kind}: {Path(self.path).name}{what}, {self.coverage} keys matched{unused}"

    def summary(self) -> str:
        s = (
            f"{self.kind} {Path(self.path).name}: {len(self.matched)} matched, {len(self.missing)} missing, "
            f"{len(self.unused)} unused, {len(self.unexpected)} unexpected, {len(self.mismatched)} shape mismatches"
        )
        return s + ("" if self.loaded else " (not loaded)")


@dataclass
class LoadReport:
    """Per-file key accounting of :func:`load_pretrained`; prints as a rich table."""

    sources: list[SourceReport] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(s.summary() for s in self.sources)

    def __rich__(self):
        from rich.table import Table

        t = Table(title="Pretrained weights", show_lines=False)
        for col in ("file", "format", "matched", "missing", "unused", "unexpected", "shape mismatch"):
            t.add_column(col, justify="left" if col in ("file", "format") else "right")
        for s in self.sources:
            t.add_row(
                Path(s.path).name,
                s.kind,
                str(len(s.matched)),
                str(len(s.missing)),
                str(len(s.unused)),
                str(len(s.unexpected)),
                str(len(s.mismatched)),
            )
        return t

    def details(self) -> str:
        """Every non-matched key with its reason (for logs)."""
        lines = []
        for s in self.sources:
            lines.append(s.summary())
            lines += [f"  missing     {k}" for k in s.missing]
            lines += [f"  unused      {k}  ({why})" for k, why in s.unused.items()]
            lines += [f"  unexpected  {k}" for k in s.unexpected]
            lines += [f"  mismatch    {k}  ({why})" for k, why in s.mismatched.items()]
            lines += [f"  ignored object {o}" for o in s.ignored_objects]
        return "\n".join(lines)


class _Inert:
    """Placeholder for a non-tensor object pickled in a weight file: accepts anything, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


_NUMPY_GLOBALS = {  # what a pickle of numpy arrays refers to (Python 2 and 3, numpy 1 and 2), and nothing else
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts and plain values only: any other global is refused,
    so reading an untrusted file runs no code of its choosing (what ``weights_only`` does for torch files)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weight file")
        if module == "_codecs":
            return codecs.encode
        if module == "collections":
            return dict
        if module == "numpy":
            return getattr(np, name)
        core = getattr(np, "_core", None) or np.core
        return getattr(core.multiarray, name)


def read_pickled_arrays(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """A plain pickle (Python 2 ``latin1`` or 3) of a dict of numpy arrays, as tensors; None when the file
    is anything else (a torch zip file, another pickle, garbage)."""
    if zipfile.is_zipfile(path):
        return None
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnly(f, encoding="latin1").load()
    except Exception:  # an untrusted file can make the unpickler raise anything
        return None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, np.ndarray) for v in obj.values()):
        return None
    return {str(k): torch.from_numpy(np.array(v)) for k, v in obj.items()}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a weight file (``weights_only=True``) -> (flat tensor dict, names of ignored pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} not found: check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weight file {path} is empty (0 bytes): download or copy it again")
    ignored: list[str] = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        arrays = read_pickled_arrays(path)
        if arrays is not None:  # a plain pickle of numpy arrays (EAC's resnet50_ft_weight.pkl)
            return _flatten(arrays, path), []
        try:
            ignored = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            ignored = []
        if not ignored:
            raise CheckpointError(
                f"weight file {path} cannot be read safely: it is corrupt or not a torch file"
            ) from None
        try:
            with torch.serialization.safe_globals([(_Inert, name) for name in ignored]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise CheckpointError(
                f"weight file {path} holds Python objects that cannot be read safely ({', '.join(ignored[:3])}): "
                "save its state_dict alone with torch.save"
            ) from None
    except Exception as e:
        # an untrusted file can make the unpickler raise anything (EOFError, IndexError, BadZipFile, ...)
        raise CheckpointError(
            f"weight file {path} cannot be read ({torch_load_failure(path, e)}): download or copy it again"
        ) from None
    return _flatten(obj, path), ignored


def _flatten(obj, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded object (bare, under 'state_dict' / 'model' ...) and drop ``module.``."""
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict (a dict of tensors): pass the weight file itself")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path} holds no tensors: pass the weight file itself")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _evolve_to_split(key: str) -> str:
    """face.evoLVe ``body.i.*`` -> POSTER++ split ``bodyS.j.*`` (stage 4 becomes ``body4``)."""
    m = re.match(r"^body\.(\d+)\.(.*)$", key)
    if not m:
        return key
    i, start = int(m.group(1)), 0
    for stage, n in enumerate(IR50_LAYOUT, start=1):
        if i < start + n:
            return f"body{stage}.{i - start}.{m.group(2)}"
        start += n
    return f"body_extra.{i}.{m.group(2)}"


def _known_unused(kind: str, key: str) -> str | None:
    for pattern, why in _UNUSED[kind]:
        if re.search(pattern, key):
            return why
    return None


def _encoder_of(model: nn.Module) -> nn.Module:
    enc = getattr(model, "encoder", model)
    if not hasattr(enc, "face_landback") or not hasattr(enc, "ir_back"):
        raise CheckpointError("load_pretrained needs a GReFEL model or its PosterEncoder")
    return enc


def match_weights(
    encoder: nn.Module,
    kind: str,
    path: str | os.PathLike,
    state: tuple[dict[str, torch.Tensor], list[str]] | None = None,
) -> tuple[SourceReport, dict[str, torch.Tensor]]:
    """Map one file's keys onto ``encoder``'s state dict; return the report and the tensors to load.

    ``state``: the file's :func:`read_state_dict` result when the caller has already read it.
    """
    sd, ignored = state if state is not None else read_state_dict(path)
    found = identify(sd)
    rep = SourceReport(
        kind=kind, path=str(path), ignored_objects=ignored, format=found[1] if found and found[0] == kind else ""
    )
    if rep.format and Path(path).resolve().parent == SHIPPED_FOLDER:
        rep.format += ", shipped with grefel"
    evolve = kind == "ir50" and any(k.startswith("body.") for k in sd)
    if kind in _WHOLE_ENCODER and not any(k.startswith(("VIT.", "attn1.", "face_landback.")) for k in sd):
        raise CheckpointError(
            f"{path} is not a POSTER++ checkpoint (no VIT./attn1./face_landback. keys): "
            "pass IR-50 files to --ir50 and MobileFaceNet to --mobilefacenet"
        )
    prefix = _TARGET_PREFIX[kind]
    own = {k: v for k, v in encoder.state_dict().items() if k.startswith(prefix)}
    to_load: dict[str, torch.Tensor] = {}
    mismatched_targets = set()
    for key, value in sd.items():  # the report names keys as the file does
        target = prefix + (_evolve_to_split(key) if evolve else key)
        if target in own:
            if tuple(value.shape) != tuple(own[target].shape):
                rep.mismatched[key] = f"file {tuple(value.shape)} vs model {tuple(own[target].shape)}"
                mismatched_targets.add(target)
            else:
                to_load[target] = value
                rep.matched.append(target)
        elif (why := _known_unused(kind, target[len(prefix) :])) is not None:
            rep.unused[key] = why
        else:
            rep.unexpected.append(key)
    rep.missing = [k for k in own if k not in to_load and k not in mismatched_targets]
    if not rep.matched:
        hint = {
            "ir50": "is it a MobileFaceNet or POSTER++ file?",
            "mobilefacenet": "is it an IR-50 or POSTER++ file?",
            "poster": "is it for another model?",
            "tiny-encoder": "is it for another model?",
        }[kind]
        raise CheckpointError(
            f"{path}: none of its {len(sd)} keys fit the encoder's {kind} part ({hint}); "
            f"the {kind} weights are {HOW_TO_GET[kind]}"
        )
    return rep, to_load


def identify(sd: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """Which kind of weight file a (flattened, ``module.``-free) state dict is, by its keys alone.

    Returns ``(kind, format)``, e.g. ``("ir50", "face.evoLVe IR-50")``, or ``None`` when the keys are
    none of :data:`WEIGHT_KINDS`. Only the key names are looked at: :func:`check_weight_file` then
    verifies every key and shape against the model.
    """
    keys = set(sd)

    def has(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    if has("ClassHead.") and has("BboxHead.") and has("LandmarkHead."):
        if has("body.layer1."):
            return "facexlib-resnet50", "facexlib RetinaFace ResNet-50"
        if has("body.stage1."):
            return "facexlib-mobile0.25", "facexlib RetinaFace mobile0.25"
        return None
    if has("VIT.") and has("ir_back.", "face_landback."):
        stem = sd.get("ir_back.input_layer.0.weight")
        if stem is not None and stem.shape[0] == preset_kwargs("tiny")["encoder"]["ir_stem"]:
            return "tiny-encoder", "grefel tiny encoder"
        return "poster", "POSTER++ checkpoint"
    if "input_layer.0.weight" in keys and any(re.match(r"body\.\d+\.", k) for k in keys):
        return "ir50", "face.evoLVe IR-50"
    if "input_layer.0.weight" in keys and has("body1."):
        return "ir50", "POSTER++ split IR-50"
    if {"conv1.conv.weight", "conv2_dw.conv.weight"} <= keys and has("conv_6_sep."):
        return "mobilefacenet", "MobileFaceNet 68-point landmarks"
    if {"conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight"} <= keys:
        if "layer1.0.conv3.weight" in keys:
            return "resnet50-vggface2", "ResNet-50 (VGGFace2 Caffe conversion layout)"
        if has("feature."):
            return "resnet18-dream", "DREAM ResNet-18 (ijba_res18_naive)"
        return "resnet18", "ResNet-18 (torchvision layout)"
    return None


@lru_cache(maxsize=3)
def _trunk_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a baseline backbone (built once, random weights)."""
    return {k: tuple(v.shape) for k, v in create_backbone(backbone).state_dict().items()}


def match_backbone(kind: str, sd: dict[str, torch.Tensor], path: str | os.PathLike) -> tuple[SourceReport, dict]:
    """Key accounting of a baseline backbone file (``kind`` of :data:`BACKBONE_KINDS`) against its trunk,
    and the tensors to load. The pretraining task's classifier (``fc``, DREAM's ``feature``) never runs in a
    baseline (each method has its own head): reported unused."""
    own = _trunk_shapes(BACKBONE_KINDS[kind])
    rep = SourceReport(kind=kind, path=str(path), format=(identify(sd) or ("", ""))[1])
    to_load = {}
    for key, value in sd.items():
        if key.split(".")[0] in ("fc", "feature"):
            rep.unused[key] = "classifier of the pretraining task (the method has its own head)"
        elif key not in own:
            rep.unexpected.append(key)
        elif tuple(value.shape) != own[key]:
            rep.mismatched[key] = f"file {tuple(value.shape)} vs model {own[key]}"
        else:
            to_load[key] = value
            rep.matched.append(key)
    # BatchNorm counts are not weights: a converted file without them loads (they start at 0)
    rep.missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    return rep, to_load


@lru_cache(maxsize=2)
def _detector_shapes(network: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of facexlib's RetinaFace ``network`` (built once, random weights, nothing downloaded)."""
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():  # torchvision's deprecation notice for resnet50(pretrained=False)
        warnings.simplefilter("ignore", UserWarning)
        net = RetinaFace(network_name=network, half=False, device="cpu")
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def match_detector(kind: str, sd: dict[str, torch.Tensor], path: str | os.PathLike) -> SourceReport:
    """Key accounting of a facexlib RetinaFace file (``kind`` of :data:`DETECTOR_KINDS`) against facexlib's net."""
    own = _detector_shapes(DETECTOR_KINDS[kind])
    rep = SourceReport(kind=kind, path=str(path), format=(identify(sd) or ("", ""))[1])
    for key, value in sd.items():
        if key not in own:
            rep.unexpected.append(key)
        elif tuple(value.shape) != own[key]:
            rep.mismatched[key] = f"file {tuple(value.shape)} vs model {own[key]}"
        else:
            rep.matched.append(key)
    rep.missing = [k for k in own if k not in sd]
    return rep


def check_weight_file(
    path: str | os.PathLike, encoder: Callable[[], nn.Module] | nn.Module | None = None
) -> SourceReport:
    """Identify a weight file by its content and verify every key against the model it is for.

    ``encoder``: the full preset's encoder, or a function building it (called only for IR-50,
    MobileFaceNet and POSTER++ files; default: ``create_model("full").encoder``; a tiny encoder
    file is checked against the tiny preset's encoder). Returns the
    complete :class:`SourceReport`; raises :class:`CheckpointError` (one line) when the file is
    unreadable, of no known kind, or does not fit (missing, unexpected or mismatched keys).
    """
    sd, ignored = read_state_dict(path)
    found = identify(sd)
    name = Path(path).name
    if found is None:
        if any(k.startswith("encoder.") for k in sd):
            raise CheckpointError(f"{name} is a grefel run checkpoint, not a pretrained weight file")
        known = (
            "face.evoLVe or POSTER++ IR-50, MobileFaceNet, a POSTER++ checkpoint, facexlib RetinaFace, "
            "a baseline's ResNet-18 / ResNet-50"
        )
        raise CheckpointError(f"{name} is no known weight file (keys such as {next(iter(sd))}; known: {known})")
    kind, fmt = found
    if kind in DETECTOR_KINDS:
        rep = match_detector(kind, sd, path)
    elif kind in BACKBONE_KINDS:
        rep, _ = match_backbone(kind, sd, path)
    else:
        if kind in _PRESET_OF:
            encoder = create_model(_PRESET_OF[kind], 7).encoder
        elif encoder is None:
            encoder = lambda: create_model("full", 7).encoder  # noqa: E731
        enc = encoder() if callable(encoder) and not isinstance(encoder, nn.Module) else encoder
        try:
            rep, _ = match_weights(enc, kind, path, state=(sd, ignored))
        except CheckpointError as e:  # none of its keys fit
            raise CheckpointError(f"{name} looks like a {fmt} file but does not fit the model: {e}") from None
    if not rep.complete:
        raise CheckpointError(f"{name} looks like a {fmt} file but does not fit the model: {rep.problems()}")
    return rep


def load_pretrained(
    model: nn.Module,
    ir50: str | os.PathLike | None = None,
    mobilefacenet: str | os.PathLike | None = None,
    poster: str | os.PathLike | None = None,
    allow_partial: bool = False,
    tiny_encoder: str | os.PathLike | None = None,
) -> LoadReport | None:
    """Load pretrained files into the encoder of ``model`` (in the order ir50, mobilefacenet, poster,
    tiny_encoder; the keyword of kind ``tiny-encoder`` is ``tiny_encoder``).

    Returns a :class:`LoadReport` (``None`` when no file is given). Raises :class:`CheckpointError`
    on a missing / unreadable file, and on any missing, unexpected or shape-mismatched key unless
    ``allow_partial`` (then whatever matches is loaded and the rest is in the report).
    """
    given = (("ir50", ir50), ("mobilefacenet", mobilefacenet), ("poster", poster), ("tiny-encoder", tiny_encoder))
    sources = [(k, p) for k, p in given if p]
    if not sources:
        return None
    encoder = _encoder_of(model)
    report = LoadReport()
    staged = []
    for kind, path in sources:
        rep, tensors = match_weights(encoder, kind, path)
        report.sources.append(rep)
        if not rep.complete and not allow_partial:
            preset = _PRESET_OF.get(kind, "full")
            raise CheckpointError(
                f"{Path(path).name} does not fit the {kind} part of this model: {rep.problems()}. "
                f"The {preset} preset takes {HOW_TO_GET[kind]}; or set allow_partial to load what matches"
            )
        staged.append((rep, tensors))
    for rep, tensors in staged:
        result = encoder.load_state_dict(tensors, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys  # every staged key exists in the encoder
        rep.loaded = True
    return report


# -- adding files to the store (grefel weights add) ----------------------------------------------
def add_weights(
    files: Iterable[str | os.PathLike],
    data_root: str | os.PathLike | None = None,
    *,
    link: bool = False,
    force: bool = False,
    on_result=None,
) -> list[AddResult]:
    """Identify, verify and store each of ``files``; return one :class:`AddResult` per file.

    A file that cannot be read, is of no known kind or does not fit the model gets a ``failed``
    result with a one-line message, and the others still go in. ``link``: a symbolic link to the
    file instead of a copy. ``force``: replace a different file already registered for that kind.
    ``on_result(result)`` is called as each file is done (for printing as they go).
    """
    store = store_dir(data_root)
    encoder = cache(_full_encoder)  # built once, only if an encoder file comes along
    results = []
    with locked_store(store):
        entries = read_entries(store)
        for src in files:
            try:
                res = _add_one(Path(src).expanduser(), store, entries, link, force, encoder)
            except GrefelError as e:
                res = AddResult(str(src), "failed", str(e))
            except OSError as e:  # unreadable source, full disk ...
                res = AddResult(str(src), "failed", f"{src}: {e.strerror or e}")
            results.append(res)
            if on_result is not None:
                on_result(res)
    return results


def _full_encoder():

    return create_model("full", 7).encoder


def _add_one(src: Path, store: Path, entries: dict[str, WeightEntry], link: bool, force: bool, encoder) -> AddResult:
    regular_file(src, "weight file")  # a folder, a FIFO ...: say what it is
    if src.stat().st_size == 0:
        raise CheckpointError(f"{src} is empty (0 bytes): download or copy it again")
    sha = sha256_file(src)
    for e in entries.values():
        # unchanged only when the stored file still hashes to it (a same-size edit is caught); force re-installs
        if e.sha256 == sha and e.state() != "missing" and sha256_file(e.path) == sha and not force:
            return AddResult(str(src), "unchanged", f"{src.name}: already registered as {e.kind} ({e.file})", e)
    rep = check_weight_file(src, encoder)
    old = entries.get(rep.kind)
    if old is not None and old.sha256 != sha and not force and old.state() == "ok":  # a damaged copy is replaced
        msg = f"{src.name}: the store already holds another {rep.kind} file ({old.file}, sha256 {old.sha256[:12]})"
        return AddResult(str(src), "exists", msg, old)
    # detectors under facexlib's own file name (the folder then also works as a weights folder)
    dest = store / rep.kind / (FACEXLIB_WEIGHTS[rep.kind][1] if rep.kind in FACEXLIB_WEIGHTS else src.name)
    install_file(src, dest, link, sha)
    entry = WeightEntry(
        kind=rep.kind,
        file=str(dest.relative_to(store)),
        format=rep.format,
        sha256=sha,
        size=src.stat().st_size,
        mode="link" if link else "copy",
        source=str(src.resolve()),
        matched=len(rep.matched),
        total=rep.total,
        unused=len(rep.unused),
        added=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        mtime_ns=dest.stat().st_mtime_ns,
        store=store,
    )
    entries[rep.kind] = entry
    write_entries(store, entries)
    if old is not None and old.path != dest:  # only now: a crash before the write keeps the old entry whole
        with contextlib.suppress(OSError):
            old.path.unlink()
    verb = "linked" if link else "copied"
    status = "added" if old is None else "replaced"
    return AddResult(str(src), status, f"{rep.line()}; sha256 {sha[:12]}; {verb} to {dest}", entry)
