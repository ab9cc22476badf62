"""Inference backends: each turns a batch of token-id lists into pooled float32 vectors (base.py)."""

from __future__ import annotations

from ..config import Settings
from ..model.loaded import LoadedModel
from .base import Backend


def create_backend(settings: Settings, model: LoadedModel) -> Backend:
    """The backend the settings name (validated in config.py), built from the loaded model."""
    if settings.backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model)
    from .onnx_backend import OnnxBackend

    return OnnxBackend(model, settings.resolved_cache_dir(), quantize=settings.quantize)
