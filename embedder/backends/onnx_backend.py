"""The ONNX Runtime backend: the model's transformer as an ONNX graph, pooled like its Pooling module.

In the Gunicorn master the backend gets the ONNX files from ``onnx_export.py`` (shipped, cached or
made in child processes) and keeps only their paths: it never imports onnxruntime (nor torch)
there. Each worker, after fork, opens the serving form's graph by path with intra-op threads = its
share of the cores; ONNX Runtime maps the weights (pre-packed copies included) from its data file,
so all workers share those pages. Pooling runs in NumPy, by the modes in the model's Pooling
config (``model/pooling.py``), then its Dense layers if any (``model/dense.py``), so the vectors
are the model's own (before any final Normalize: the service normalizes when the request asks). A
reranker's graph is its sequence-classification model: pairs in, their logits out, as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model.dense import apply
from ..model.errors import UnsupportedModel
from ..model.loaded import LoadedModel
from ..model.pipeline import RULE, TORCH_HINT
from ..model.pooling import implemented, pool
from ..model.rerank import RERANKER
from .base import pad, pad_type_ids
from .onnx_export import onnx_files


# -- the backend ------------------------------------------------------------------------------------
class OnnxBackend:
    def __init__(self, model: LoadedModel, cache_dir: Path, quantize: str = ""):
        """In the master: check the pipeline and get the files (paths only). No session here."""
        self.pad_id = model.pad_id
        self.name = "onnx-int8" if quantize else "onnx"
        #: A reranker: the graph's logits are the answer (no pooling, no Dense layers).
        self.reranker = model.kind == RERANKER
        if not model.pooling_modes and not self.reranker:
            # the loader found no Transformer -> Pooling -> Dense* (-> Normalize) chain
            raise UnsupportedModel(f"the onnx backend runs {RULE} models; "
                                   f"{model.model_id} is not one: {TORCH_HINT}")
        self.modes = () if self.reranker else implemented(model.pooling_modes)
        self.dense = tuple(model.dense)  # NumPy weights, read in the master: the workers share their pages
        files = onnx_files(model, cache_dir, quantize)
        #: The graph as shipped, exported or quantized; the one workers open; whether that one is a
        #: serving form (optimized already, weights mapped from its data file).
        self.path, self.serving, self.prepared = files.source, files.serving, files.prepared
        self._session = None
        self._feeds: list[str] = []
        self._output = ""

    def start(self, threads: int) -> None:
        """Per worker, after fork: the session, with this worker's share of the cores."""
        import onnxruntime as ort  # in the worker only: imported in the master, it starts a thread before fork

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
        names, shape = ((("logits",), "(batch, labels)") if self.reranker
                        else (("last_hidden_state", "token_embeddings"), "(batch, tokens, dim)"))
        named = [o.name for o in outputs if o.name in names]
        ranked = [o.name for o in outputs if len(o.shape) == shape.count(",") + 1]
        if not (named or ranked):
            raise UnsupportedModel(f"{self.serving} has no {shape} output")
        self._feeds, self._output = inputs, (named or ranked)[0]
        self._session = session

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("OnnxBackend.start() must run (in the worker) before forward()")
        input_ids, mask = pad(batch, self.pad_id)
        values = {"input_ids": input_ids, "attention_mask": mask}
        # token_type_ids go in only when the graph takes them (an export of a model without them won't):
        # a pair's segments, zeros for single texts.
        if "token_type_ids" in self._feeds:
            values["token_type_ids"] = pad_type_ids(batch, input_ids.shape[1])
        out = self._session.run([self._output], {name: values[name] for name in self._feeds})[0]
        out = out.astype(np.float32, copy=False)
        if self.reranker:
            return out.reshape(len(batch), -1)  # logits (pairs x 1)
        return apply(self.dense, pool(out, mask, self.modes))
