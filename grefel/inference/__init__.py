"""Inference on photos and videos: predict, the torch and ONNX backends, export."""
