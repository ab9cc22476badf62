"""The ONNX Runtime backend: the model's transformer as an ONNX graph, pooled like its Pooling module.

In the Gunicorn master the backend gets the ONNX files from ``onnx_export.py`` (shipped, cached or
made in child processes) and keeps only their paths: it never imports onnxruntime (nor torch)
there. Each worker, after fork, opens the serving form's graph by path with intra-op threads = its
share of the cores; ONNX Runtime maps the weights (pre-packed copies included) from its data file,
so all workers share those pages. Pooling runs in NumPy, by the modes in the model's Pooling
config, so the vectors are the model's own (before any final Normalize: the service normalizes
when the request asks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..model import LoadedModel
from .base import pad
from .onnx_export import UnsupportedModel, onnx_files

#: Pooling modes implemented below (sentence-transformers' Pooling names).
POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


# -- pooling ----------------------------------------------------------------------------------------
def pooling_modes(pooling) -> tuple[str, ...]:
    """A Pooling module's (or config's) modes, in its concatenation order; refuses what is not
    implemented. ``pooling``: a mode name, a sequence of them, or an object with ``pooling_mode``."""
    mode = getattr(pooling, "pooling_mode", pooling)
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise UnsupportedModel(f"pooling mode {', '.join(unknown)} is not implemented by the onnx "
                               f"backend (it has {', '.join(POOLING_MODES)}): use EMBEDDER_BACKEND=torch")
    # include_prompt=False needs the prompt's length, which sentence-transformers only passes when it
    # encodes with a prompt itself; the service (torch backend too) pools every token it sends.
    return modes


def pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """sentence-transformers' Pooling on right-padded token vectors (batch, tokens, dim)."""
    weights = mask.astype(np.float32)[..., None]
    lengths = np.maximum(weights.sum(axis=1), 1e-9)
    rows = np.arange(hidden.shape[0])
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[rows, mask.argmax(axis=1)])
        elif mode == "mean":
            out.append((hidden * weights).sum(axis=1) / lengths)
        elif mode == "mean_sqrt_len_tokens":
            out.append((hidden * weights).sum(axis=1) / np.sqrt(lengths))
        elif mode == "max":
            out.append(np.where(weights > 0, hidden, -np.inf).max(axis=1))
        elif mode == "weightedmean":
            position = weights * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            out.append((hidden * position).sum(axis=1) / np.maximum(position.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            out.append(hidden[rows, mask.sum(axis=1) - 1])
        else:  # pooling_modes() lets only the above through
            raise UnsupportedModel(f"pooling mode {mode!r}")
    return np.concatenate(out, axis=1).astype(np.float32, copy=False)


# -- the backend ------------------------------------------------------------------------------------
class OnnxBackend:
    def __init__(self, model: LoadedModel, cache_dir: Path, quantize: str = ""):
        """In the master: check the pipeline and get the files (paths only). No session here."""
        self.pad_id = model.pad_id
        self.name = "onnx-int8" if quantize else "onnx"
        if not model.pooling_modes:
            raise UnsupportedModel(f"the onnx backend runs Transformer -> Pooling (-> Normalize) models; "
                                   f"{model.model_id} is not one: use EMBEDDER_BACKEND=torch")
        self.modes = pooling_modes(model.pooling_modes)
        files = onnx_files(model, cache_dir, quantize)
        #: The graph as shipped, exported or quantized; the one workers open; whether that one is a
        #: serving form (optimized already, weights mapped from its data file).
        self.path, self.serving, self.prepared = files.source, files.serving, files.prepared
        self._session = None
        self._feeds: list[str] = []
        self._output = ""

    def start(self, threads: int) -> None:
        """Per worker, after fork: the session, with this worker's share of the cores."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # A serving form was optimized (ORT_ENABLE_ALL) when it was made; optimizing again would only
        # rebuild what it holds, in private memory.
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if self.prepared
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        session = ort.InferenceSession(str(self.serving), options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]
        unknown = set(inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in inputs:
            raise UnsupportedModel(f"{self.serving} has inputs {inputs}; expected input_ids, "
                                   "attention_mask and optionally token_type_ids")
        outputs = session.get_outputs()
        named = [o.name for o in outputs if o.name in ("last_hidden_state", "token_embeddings")]
        ranked = [o.name for o in outputs if len(o.shape) == 3]
        if not (named or ranked):
            raise UnsupportedModel(f"{self.serving} has no (batch, tokens, dim) output")
        self._feeds, self._output = inputs, (named or ranked)[0]
        self._session = session

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("OnnxBackend.start() must run (in the worker) before forward()")
        input_ids, mask = pad(batch, self.pad_id)
        values = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        # token_type_ids go in only when the graph takes them (an export of a model without them won't).
        hidden = self._session.run([self._output], {name: values[name] for name in self._feeds})[0]
        return pool(hidden.astype(np.float32, copy=False), mask, self.modes)
