"""The PyTorch backend: the sentence-transformers modules, run up to (not including) a final Normalize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.loaded import LoadedModel
from .base import pad


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel):
        self.model = model
        modules = list(model.st_model.children())
        # normalize=false must return the raw pooled vector, so stop before a trailing Normalize.
        self._modules = modules[:-1] if model.ends_with_normalize else modules

    def start(self, threads: int) -> None:
        """Per worker, after fork: size torch's thread pools. Never call this in the master."""
        import torch  # here, not at the top: importing this module must not import torch (onnx path)

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        import torch  # (see start)

        input_ids, attention_mask = (torch.from_numpy(array) for array in pad(batch, self.model.pad_id))
        features = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "modality": "text",
        }
        if self.model.uses_token_type_ids:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        with torch.inference_mode():
            for module in self._modules:
                features = module(features)
        return features["sentence_embedding"].float().numpy()
