"""grefel: reproduce, stress-test and extend GReFEL (geometry-aware reliable facial expression learning).

``grefel.load(path)`` returns a :class:`grefel.api.Model` (``.predict(files)``, ``.predict_faces(faces)``).

The library's layers, bottom to top (each imports only from those below it; CONTRIBUTING.md):
``core`` -> ``data`` -> ``synth`` -> ``models`` -> ``weights`` -> ``training`` -> ``evaluation``
-> ``inference`` -> ``report`` -> ``study`` -> ``api``, ``demo``.
"""

from grefel.core.version import __version__

__all__ = ["Model", "__version__", "load"]


def load(path, **kwargs):
    """A trained model ready to classify faces: a checkpoint (``best.pt``) or an exported ``.onnx``.

    Keywords: ``align`` (face detector, or "none" for aligned faces), ``weights_dir``, ``device``.
    See :func:`grefel.api.load`.
    """
    from grefel.api import load as _load  # lazy: the API loads pandas and OpenCV; `import grefel` stays light

    return _load(path, **kwargs)


def __getattr__(name):
    if name == "Model":
        from grefel.api import Model  # lazy: as load()

        return Model
    raise AttributeError(f"module 'grefel' has no attribute {name!r}")
