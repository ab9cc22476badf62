"""The ONNX Runtime backend: the model's transformer as an ONNX graph, pooled like its Pooling module.

In the Gunicorn master the backend gets the ONNX files from ``onnx_export.py`` (shipped, cached or
made in child processes) and keeps only their paths: it never imports onnxruntime (nor torch)
there. Each worker, after fork, opens the serving form's graph by path with intra-op threads = its
share of the cores; ONNX Runtime maps the weights (pre-packed copies included) from its data file,
so all workers share those pages. Pooling runs in NumPy (``graph.py``, shared with the openvino
backend), by the modes in the model's Pooling
config (``model/pooling.py``), then its Dense layers if any (``model/dense.py``), so the vectors
are the model's own (before any final Normalize: the service normalizes when the request asks). A
reranker's graph is its sequence-classification model: pairs in, their logits out, as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model.loaded import LoadedModel
from .graph import GraphPost
from .onnx_export import onnx_files


# -- the backend ------------------------------------------------------------------------------------
class OnnxBackend:
    def __init__(self, model: LoadedModel, cache_dir: Path, quantize: str = ""):
        """In the master: check the pipeline and get the files (paths only). No session here."""
        self.name = "onnx-int8" if quantize else "onnx"
        #: Feeds, pooling, Dense layers and a reranker's logits: shared with the openvino backend.
        self.post = GraphPost(model, "onnx")
        self.reranker = self.post.reranker
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
        self._feeds, self._output = self.post.choose(
            self.serving, [i.name for i in session.get_inputs()],
            [(o.name, len(o.shape)) for o in session.get_outputs()])
        self._session = session

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("OnnxBackend.start() must run (in the worker) before forward()")
        feeds, mask = self.post.feeds(batch, self._feeds)
        return self.post.finish(self._session.run([self._output], feeds)[0], mask)
