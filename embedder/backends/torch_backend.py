"""The PyTorch backend: the sentence-transformers modules, run up to (not including) a final Normalize."""

from __future__ import annotations

import numpy as np

from ..model import LoadedModel


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel):
        self.model = model
        modules = list(model.st_model.children())
        # normalize=false must return the raw pooled vector, so stop before a trailing Normalize.
        self._modules = modules[:-1] if model.ends_with_normalize else modules

    def start(self, threads: int) -> None:
        """Per worker, after fork: size torch's thread pools. Never call this in the master."""
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass

    def forward(self, batch: list[list[int]]) -> np.ndarray:
        import torch

        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), self.model.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
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
