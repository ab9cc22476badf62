"""Inference backends: each turns a batch of token-id lists into pooled float32 vectors, or a
reranker's batch of pairs into their logits (base.py)."""

from __future__ import annotations

from ..config import Settings
from ..model.loaded import LoadedModel
from .base import Backend
from .onnx_backend import OnnxBackend
from .openvino_backend import OpenVinoBackend
from .torch_backend import TorchBackend


def create_backend(settings: Settings, model: LoadedModel) -> Backend:
    """The backend the settings name (validated in config.py), built from the loaded model, an
    embedding model or a reranker alike."""
    if settings.backend == "torch":
        return TorchBackend(model)
    if settings.backend == "openvino":
        return OpenVinoBackend(model, settings.resolved_cache_dir(), precision=settings.precision)
    return OnnxBackend(model, settings.resolved_cache_dir(),
                       quantize="int8" if settings.precision == "int8" else "")
