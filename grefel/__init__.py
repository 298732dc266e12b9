"""grefel: reproduce, stress-test and extend GReFEL (geometry-aware reliable facial expression learning).

``grefel.load(path)`` returns a :class:`grefel.api.Model` (``.predict(files)``, ``.predict_faces(faces)``).
Importing grefel stays light: the API is imported on first use.
"""

__version__ = "0.1.0"


def load(path, **kwargs):
    """A trained model ready to classify faces: a checkpoint (``best.pt``) or an exported ``.onnx``.

    Keywords: ``align`` (face detector, or "none" for aligned faces), ``weights_dir``, ``device``.
    See :func:`grefel.api.load`.
    """
    from grefel.api import load as _load

    return _load(path, **kwargs)


def __getattr__(name):
    if name == "Model":
        from grefel.api import Model

        return Model
    raise AttributeError(f"module 'grefel' has no attribute {name!r}")
