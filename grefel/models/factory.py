"""One door to every model grefel trains: GReFEL (:mod:`grefel.models.grefel`) and the noisy-label
baselines CE (:mod:`grefel.models.resnets`), EAC, SCN and RUL (:mod:`grefel.models.eac`, ``scn``, ``rul``).

``create_method_model(method, preset, num_classes, **overrides)`` builds one; its ``model_config``
(method, preset, num_classes and overrides) says how, its ``model_kwargs`` holds the resolved
constructor arguments. A checkpoint stores both, and :func:`model_from_record` rebuilds the very
architecture from them (a record without ``method`` is a GReFEL model).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from grefel.core.errors import GrefelError
from grefel.core.recipe import TRAIN_METHODS
from grefel.models.eac import EAC
from grefel.models.grefel import create_model, model_from_kwargs
from grefel.models.presets import list_presets
from grefel.models.resnets import PRESET_BACKBONES, BaselineNet, ResNetCE, baseline_kwargs
from grefel.models.rul import RUL
from grefel.models.scn import SCN

BASELINE_CLASSES: dict[str, type[BaselineNet]] = {"ce": ResNetCE, "eac": EAC, "scn": SCN, "rul": RUL}


def check_method(method: str) -> None:
    if method not in TRAIN_METHODS:
        raise GrefelError(f"unknown method {method!r}: use one of {', '.join(TRAIN_METHODS)}")


def method_presets(method: str) -> list[str]:
    """The presets ``method`` runs on: GReFEL's registry, or the baselines' backbones."""
    check_method(method)
    return list_presets() if method == "grefel" else list(PRESET_BACKBONES)


def create_method_model(method: str, preset: str, num_classes: int, **overrides: Any) -> nn.Module:
    """The model of ``method`` with ``preset``'s architecture and keyword ``overrides``."""
    check_method(method)
    if method == "grefel":
        return create_model(preset, num_classes, **overrides)
    if preset not in PRESET_BACKBONES:
        raise GrefelError(
            f"method {method} has no preset {preset!r}: use one of {', '.join(PRESET_BACKBONES)} "
            "(full = ResNet-18, resnet50 = the Caffe-style VGGFace2 ResNet-50, tiny = a small CNN)"
        )
    kwargs = baseline_kwargs(preset, num_classes, overrides)
    config = {"method": method, "preset": preset, "num_classes": num_classes, **overrides}
    return _build_baseline(method, kwargs, config)


def model_from_record(model_kwargs: dict[str, Any], model_config: dict[str, Any] | None = None) -> nn.Module:
    """The model a checkpoint records (its ``model_kwargs`` and ``model_config``), whatever the presets are now."""
    config = dict(model_config or {})
    method = config.get("method", "grefel")
    check_method(method)
    if method == "grefel":
        return model_from_kwargs(model_kwargs, config)
    return _build_baseline(method, dict(model_kwargs), config)


def _build_baseline(method: str, kwargs: dict[str, Any], config: dict[str, Any]) -> BaselineNet:
    try:
        model = BASELINE_CLASSES[method](**kwargs)
    except TypeError as e:
        raise GrefelError(f"bad model option for method {method}: {e}") from None
    model.model_config = config
    model.model_kwargs = copy.deepcopy(kwargs)
    return model
