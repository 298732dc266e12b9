"""grefel's version, recorded in every file grefel writes (checkpoints, manifests, reports, ONNX metadata)."""

__version__ = "0.1.0"
