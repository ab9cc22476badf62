"""What the backends that run an exported graph share (ONNX Runtime's and OpenVINO's): the checks
on the model's pipeline, which inputs the graph takes and which output is the answer, the feeds of
a batch, and the post-processing in NumPy (pooling by the model's Pooling config, its Dense layers;
a reranker's logits as they are). Only the runtime differs, so the vectors are the same code's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.dense import apply
from ..model.errors import UnsupportedModel
from ..model.loaded import LoadedModel
from ..model.pipeline import RULE, TORCH_HINT
from ..model.pooling import implemented, pool
from ..model.rerank import RERANKER
from .base import pad, pad_type_ids

#: The inputs an exported graph may take; ``input_ids`` is required.
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class GraphPost:
    """The model's side of a graph backend, built in the master from the loaded model (NumPy only)."""

    def __init__(self, model: LoadedModel, backend: str):
        self.pad_id = model.pad_id
        #: A reranker: the graph's logits are the answer (no pooling, no Dense layers).
        self.reranker = model.kind == RERANKER
        if not model.pooling_modes and not self.reranker:
            # the loader found no Transformer -> Pooling -> Dense* (-> Normalize) chain
            raise UnsupportedModel(f"the {backend} backend runs {RULE} models; "
                                   f"{model.model_id} is not one: {TORCH_HINT}")
        self.modes = () if self.reranker else implemented(model.pooling_modes)
        self.dense = tuple(model.dense)  # NumPy weights, read in the master: the workers share their pages

    def choose(self, where, inputs: Sequence[str], outputs: Sequence[tuple[str, int]]) -> tuple[list[str], str]:
        """The graph's feeds and the output to read, from its input names and its outputs' (name,
        rank); UnsupportedModel if it is not an exported graph of this kind of model."""
        inputs = list(inputs)
        unknown = set(inputs) - set(INPUTS)
        if unknown or "input_ids" not in inputs:
            raise UnsupportedModel(f"{where} has inputs {inputs}; expected input_ids, "
                                   "attention_mask and optionally token_type_ids")
        names, shape = ((("logits",), "(batch, labels)") if self.reranker
                        else (("last_hidden_state", "token_embeddings"), "(batch, tokens, dim)"))
        named = [name for name, _ in outputs if name in names]
        ranked = [name for name, rank in outputs if rank == shape.count(",") + 1]
        if not (named or ranked):
            raise UnsupportedModel(f"{where} has no {shape} output")
        return inputs, (named or ranked)[0]

    def feeds(self, batch: Sequence[Sequence[int]], names: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The graph's inputs for a batch (right-padded, int64) and the attention mask."""
        input_ids, mask = pad(batch, self.pad_id)
        values = {"input_ids": input_ids, "attention_mask": mask}
        # token_type_ids go in only when the graph takes them (an export of a model without them won't):
        # a pair's segments, zeros for single texts.
        if "token_type_ids" in names:
            values["token_type_ids"] = pad_type_ids(batch, input_ids.shape[1])
        return {name: values[name] for name in names}, mask

    def finish(self, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The graph's output as the backend's answer: pooled vectors through the Dense layers, or
        a reranker's logits (pairs x labels), float32, never a view of the runtime's buffer."""
        out = np.asarray(out).astype(np.float32, copy=False)
        if self.reranker:
            return np.array(out.reshape(len(mask), -1), dtype=np.float32)  # logits (pairs x 1)
        return apply(self.dense, pool(out, mask, self.modes))
