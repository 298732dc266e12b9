"""grefel: reproduce, stress-test and extend GReFEL (geometry-aware reliable facial expression learning).

``grefel.load(path)`` returns a :class:`grefel.api.Model` (``.predict(files)``, ``.predict_faces(faces)``).

The library's layers, bottom to top (each imports only from those below it; CONTRIBUTING.md):
``core`` -> ``data`` -> ``synth`` -> ``models`` -> ``weights`` -> ``training`` -> ``evaluation``
-> ``inference`` -> ``report`` -> ``study`` -> ``api``, ``demo``.
"""

from grefel.core.version import __version__

__all__ = ["Model", "__version__", "load"]


def __getattr__(name):
    """``grefel.load`` and ``grefel.Model``, imported on first use (PEP 562)."""
    if name in ("load", "Model"):
        from grefel import api  # lazy: the API loads OpenCV and ONNX Runtime; `import grefel` stays light

        return getattr(api, name)
    raise AttributeError(f"module 'grefel' has no attribute {name!r}")
