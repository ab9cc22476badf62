"""Inference backends: each turns a batch of token-id lists into pooled float32 vectors.

A backend is built in the Gunicorn master from the loaded model (weights only, never run there)
and started in each worker after fork, where it sets its thread count and warms up.
"""

from __future__ import annotations

from ..config import Settings
from ..model import LoadedModel


def create_backend(settings: Settings, model: LoadedModel):
    if settings.backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model)
    if settings.backend == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(model, settings.resolved_cache_dir(), quantize=settings.quantize)
    raise ValueError(f"unknown backend {settings.backend!r}")
