"""GReFEL models: the POSTER++-style encoder, the reliability balancing head and the losses.

:mod:`~grefel.models.presets` (presets by name, no torch), :mod:`~grefel.models.grefel` (the
model, ``create_model(preset, num_classes, **overrides)``), :mod:`~grefel.models.poster` (the
encoder: :mod:`~grefel.models.ir50` + :mod:`~grefel.models.mobilefacenet`),
:mod:`~grefel.models.reliability` (eqs. 9-19), :mod:`~grefel.models.losses` (eqs. 20-23),
:mod:`~grefel.models.output` (what a forward pass returns), :mod:`~grefel.models.info` (sizes).

The noisy-label baselines trained in the same harness: :mod:`~grefel.models.resnets` (their backbones
and the plain cross-entropy baseline), :mod:`~grefel.models.eac`, :mod:`~grefel.models.scn`,
:mod:`~grefel.models.rul`; :mod:`~grefel.models.factory` builds any method's model
(``create_method_model(method, preset, num_classes)``) and rebuilds a checkpoint's (``model_from_record``).
"""
