"""GReFEL models: the POSTER++-style encoder, the reliability balancing head and the losses.

``create_model(preset, num_classes, **overrides)`` builds a model from a registered preset
(``full``, ``tiny``); ``GReFELLoss`` is eq. (23); ``load_pretrained`` (in
:mod:`grefel.weights.verify`) loads IR-50 / MobileFaceNet / POSTER++ weight files.
"""

from grefel.models.grefel import RELIABILITY, GReFEL, create_model, list_presets, model_from_kwargs, register_preset
from grefel.models.losses import GReFELLoss
from grefel.models.output import GReFELOutput

__all__ = [
    "RELIABILITY",
    "GReFEL",
    "GReFELLoss",
    "GReFELOutput",
    "create_model",
    "list_presets",
    "model_from_kwargs",
    "register_preset",
]
