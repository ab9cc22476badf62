"""The OpenVINO backend: the onnx backend's exported graph, run by OpenVINO's CPU plugin, in float32
or in bfloat16 on a CPU that computes it natively.

In the Gunicorn master the backend gets the same source graph as the onnx backend
(``onnx_export.onnx_files(..., prepare=False)``: shipped, cached or exported in a child process),
keeps its path and checks the precision against the CPU; it never imports openvino there (its
runtime starts threads, which forked workers would inherit without them). Each worker, after fork,
creates its own ``ov.Core``, reads the graph with dynamic batch and length axes and compiles it
for the CPU with ``INFERENCE_NUM_THREADS`` = its share of the cores, thread pinning off (pinned,
two 1-thread workers were put on the same core), the latency hint and the precision hint (f32 or
bf16). The compiled model holds its own copy of the weights (repacked, and converted in bf16), so
each worker keeps a private copy; the graph's pages are read once and dropped. Feeds, pooling,
Dense layers and a reranker's logits are the onnx backend's own code (``graph.py``).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model.errors import UnsupportedModel
from ..model.loaded import LoadedModel
from .graph import GraphPost
from .onnx_export import onnx_files

#: /proc/cpuinfo flags of native bfloat16 arithmetic: AVX-512 BF16 (Cooper Lake, AMD Zen 4 and
#: later) or AMX-BF16 (Sapphire Rapids and later). Without them OpenVINO would emulate bf16, slower
#: than f32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Shape-specific kernels the CPU plugin keeps (its ``CPU_RUNTIME_CACHE_CAPACITY``, 5,000 by default).
#: Every (batch, length) a pass has is a shape; with the default a worker's memory grew by
#: 0.6-0.9 GiB over a few hundred shapes. Bounded, the rest is the largest pass's buffers (bounded by
#: ``EMBEDDER_MAX_BATCH_TOKENS``).
RUNTIME_CACHE_CAPACITY = 100
#: EMBEDDER_PRECISION -> OpenVINO's INFERENCE_PRECISION_HINT.
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux's /proc/cpuinfo, first processor), or None where unknown."""
    if platform.system() != "Linux":
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def native_bf16(flags: set[str] | None = None) -> bool | None:
    """Whether this CPU computes bfloat16 natively: True, False, or None where it cannot be told."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return any(flag in flags for flag in BF16_FLAGS)


def refuse_unsupported_precision(precision: str, flags: set[str] | None = None) -> None:
    """UnsupportedModel (a ValueError), saying why and what to use instead, for a precision the
    backend or this CPU cannot run fast: the server does not start."""
    if precision not in PRECISION_HINTS:
        raise UnsupportedModel(f"EMBEDDER_PRECISION={precision!r}: the openvino backend runs "
                         f"{' or '.join(PRECISION_HINTS)}; int8 is EMBEDDER_BACKEND=onnx's")
    if precision == "bfloat16":
        native = native_bf16(flags)
        if not native:
            why = ("this CPU has neither of " + " nor ".join(BF16_FLAGS) + " among its flags"
                   if native is False else "this CPU's flags cannot be read here (Linux's /proc/cpuinfo)")
            raise UnsupportedModel(f"EMBEDDER_PRECISION=bfloat16 needs a CPU with native bfloat16 arithmetic "
                             f"({'/'.join(BF16_FLAGS)}: Intel Cooper Lake, Sapphire Rapids and later, AMD "
                             f"Zen 4 and later), and {why}: emulated it would be slower than float32. Use "
                             f"EMBEDDER_PRECISION=float32 (the default), or EMBEDDER_BACKEND=onnx with "
                             f"EMBEDDER_PRECISION=int8 for speed at a lower fidelity")


class OpenVinoBackend:
    def __init__(self, model: LoadedModel, cache_dir: Path, precision: str = "float32"):
        """In the master: check the pipeline and the precision, get the graph (its path). No openvino here."""
        refuse_unsupported_precision(precision)
        self.precision = precision
        self.name = "openvino-bf16" if precision == "bfloat16" else "openvino"
        self.post = GraphPost(model, "openvino")
        self.reranker = self.post.reranker
        #: The float32 graph as shipped or exported (the onnx backend's source; no serving form).
        self.path = onnx_files(model, cache_dir, prepare=False).source
        self._request = None
        self._feeds: list[str] = []
        self._output = ""

    def start(self, threads: int) -> None:
        """Per worker, after fork: read the graph and compile it for this worker's share of the cores."""
        import openvino as ov  # in the worker only: its runtime starts threads

        core = ov.Core()
        graph = core.read_model(str(self.path))
        feeds, output = self.post.choose(
            self.path, [port.get_any_name() for port in graph.inputs],
            [(port.get_any_name(), port.get_partial_shape().rank.get_length()) for port in graph.outputs])
        graph.reshape({name: ov.PartialShape([-1, -1]) for name in feeds})  # dynamic batch and tokens
        compiled = core.compile_model(graph, "CPU", {
            "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_CAPACITY,
        })
        self._feeds, self._output = feeds, output
        self._port = compiled.output(output)
        self._request = compiled.create_infer_request()

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        if self._request is None:
            raise RuntimeError("OpenVinoBackend.start() must run (in the worker) before forward()")
        feeds, mask = self.post.feeds(batch, self._feeds)
        # finish() copies out of the request's output buffer, which the next pass overwrites.
        return self.post.finish(self._request.infer(feeds)[self._port], mask)
