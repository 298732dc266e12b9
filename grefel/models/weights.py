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

Every key ends up in exactly one bucket: matched, missing (the encoder part the file should fill
has no value for it), unused (known never to run), unexpected (not recognised), or shape mismatch.
Anything missing, unexpected or mismatched refuses the load with a one-line error unless
``allow_partial=True``: never a silent drop (POSTER++'s own loader silently keeps only keys whose
name and shape match, which loads nothing but the stem from a face.evoLVe file).

Files are read with ``torch.load(..., weights_only=True)``. Trained POSTER++ checkpoints also pickle
the authors' ``RecorderMeter`` objects, which ``weights_only`` refuses; such non-tensor objects are
replaced by an inert placeholder (nothing of theirs is imported or run) and listed in the report.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from grefel.errors import CheckpointError, torch_load_failure

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
_TARGET_PREFIX = {"ir50": "ir_back.", "mobilefacenet": "face_landback.", "poster": ""}
_HOW_TO_GET = {
    "ir50": "face.evoLVe's backbone_ir50_ms1m_epoch120.pth or POSTER++'s ir50.pth",
    "mobilefacenet": "POSTER++'s mobilefacenet_model_best.pth.tar",
    "poster": "a trained POSTER++ checkpoint (RAF-DB / AffectNet)",
}


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

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

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
    encoder: nn.Module, kind: str, path: str | os.PathLike
) -> tuple[SourceReport, dict[str, torch.Tensor]]:
    """Map one file's keys onto ``encoder``'s state dict; return the report and the tensors to load."""
    sd, ignored = read_state_dict(path)
    rep = SourceReport(kind=kind, path=str(path), ignored_objects=ignored)
    evolve = kind == "ir50" and any(k.startswith("body.") for k in sd)
    if kind == "poster" and not any(k.startswith(("VIT.", "attn1.", "face_landback.")) for k in sd):
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
        }[kind]
        raise CheckpointError(
            f"{path}: none of its {len(sd)} keys fit the encoder's {kind} part ({hint}); "
            f"--{kind} expects {_HOW_TO_GET[kind]}"
        )
    return rep, to_load


def load_pretrained(
    model: nn.Module,
    ir50: str | os.PathLike | None = None,
    mobilefacenet: str | os.PathLike | None = None,
    poster: str | os.PathLike | None = None,
    allow_partial: bool = False,
) -> LoadReport | None:
    """Load pretrained files into the encoder of ``model`` (in the order ir50, mobilefacenet, poster).

    Returns a :class:`LoadReport` (``None`` when no file is given). Raises :class:`CheckpointError`
    on a missing / unreadable file, and on any missing, unexpected or shape-mismatched key unless
    ``allow_partial`` (then whatever matches is loaded and the rest is in the report).
    """
    sources = [(k, p) for k, p in (("ir50", ir50), ("mobilefacenet", mobilefacenet), ("poster", poster)) if p]
    if not sources:
        return None
    encoder = _encoder_of(model)
    report = LoadReport()
    staged = []
    for kind, path in sources:
        rep, tensors = match_weights(encoder, kind, path)
        report.sources.append(rep)
        if not rep.complete and not allow_partial:
            problems = []
            if rep.mismatched:
                k, why = next(iter(rep.mismatched.items()))
                problems.append(f"{len(rep.mismatched)} shape mismatches (e.g. {k}: {why})")
            if rep.missing:
                problems.append(f"{len(rep.missing)} encoder keys missing (e.g. {rep.missing[0]})")
            if rep.unexpected:
                problems.append(f"{len(rep.unexpected)} unexpected keys (e.g. {rep.unexpected[0]})")
            raise CheckpointError(
                f"{Path(path).name} does not fit the {kind} part of this model: {'; '.join(problems)}. "
                f"Use the full preset with {_HOW_TO_GET[kind]}, or pass --allow-partial to load what matches"
            )
        staged.append((rep, tensors))
    for rep, tensors in staged:
        result = encoder.load_state_dict(tensors, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys  # every staged key exists in the encoder
        rep.loaded = True
    return report
