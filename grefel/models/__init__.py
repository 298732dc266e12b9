"""GReFEL models: the POSTER++-style encoder, the reliability balancing head and the losses.

:mod:`~grefel.models.presets` (presets by name, no torch), :mod:`~grefel.models.grefel` (the
model, ``create_model(preset, num_classes, **overrides)``), :mod:`~grefel.models.poster` (the
encoder: :mod:`~grefel.models.ir50` + :mod:`~grefel.models.mobilefacenet`),
:mod:`~grefel.models.reliability` (eqs. 9-19), :mod:`~grefel.models.losses` (eqs. 20-23),
:mod:`~grefel.models.output` (what a forward pass returns), :mod:`~grefel.models.info` (sizes).
"""
