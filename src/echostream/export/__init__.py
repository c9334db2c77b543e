"""Exporting models for other runtimes (ONNX)."""
