"""The PyTorch backend: the sentence-transformers modules, run up to (not including) a final Normalize;
for a reranker, the CrossEncoder's Transformer module, whose output is the pairs' logits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.loaded import LoadedModel
from ..model.rerank import RERANKER
from .base import pad, pad_type_ids


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel):
        self.model = model
        modules = list(model.st_model.children())
        # normalize=false must return the raw pooled vector, so stop before a trailing Normalize.
        self._modules = modules[:-1] if model.ends_with_normalize else modules
        #: The feature the last module writes: pooled vectors, or a CrossEncoder's logits.
        self._output = "scores" if model.kind == RERANKER else "sentence_embedding"

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
        if self.model.uses_token_type_ids:  # a pair's segments; zeros for single texts
            features["token_type_ids"] = torch.from_numpy(pad_type_ids(batch, input_ids.shape[1]))
        with torch.inference_mode():
            for module in self._modules:
                features = module(features)
        return features[self._output].float().numpy()
