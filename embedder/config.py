"""Every setting of the service, declared once, and the CPU budget the defaults come from.

Each field of :class:`Settings` is one setting: its environment variable, type (from the default),
default, one-line doc and check live in that field's declaration, as gunicorn's own ``config.py``
declares its settings. Everything else reads from here: ``Settings.from_env()`` parses the
environment, ``gunicorn.conf.py`` takes bind, workers, threads and logging from it, and
``python -m embedder.config`` prints the README's configuration table (``tests/fast/test_readme.py``
fails when the two disagree).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "EMBEDDER_"
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: Inference backends (EMBEDDER_BACKEND) and numeric precisions (EMBEDDER_PRECISION).
BACKENDS = ("onnx", "torch", "openvino")
PRECISIONS = ("float32", "bfloat16", "int8")
#: The precisions each backend runs (float32, the default, everywhere): int8 is ONNX Runtime's
#: dynamic quantization, bfloat16 OpenVINO's on a CPU with native bf16.
BACKEND_PRECISIONS = {"onnx": ("float32", "int8"), "torch": ("float32",), "openvino": ("float32", "bfloat16")}
#: EMBEDDER_QUANTIZE, the older name of the one quantized precision: empty or int8.
QUANTIZATIONS = ("", "int8")
#: A precision's suffix in a backend label.
PRECISION_LABELS = {"float32": "", "bfloat16": "bf16", "int8": "int8"}


def backend_label(backend: str, precision: str = "float32") -> str:
    """How /info, metrics and the benchmark name a backend: ``torch``, ``onnx``, ``onnx-int8``,
    ``openvino``, ``openvino-bf16``. ``precision`` may be EMBEDDER_QUANTIZE's empty or ``int8``."""
    suffix = PRECISION_LABELS[precision or "float32"]
    return f"{backend}-{suffix}" if suffix else backend


#: Every valid backend label and the (EMBEDDER_BACKEND, EMBEDDER_PRECISION) that select it.
BACKEND_LABELS = {backend_label(b, p): (b, p) for b in BACKENDS for p in BACKEND_PRECISIONS[b]}


# -- the CPU budget ---------------------------------------------------------------------------------
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
    except AttributeError:  # macOS has no affinity API
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


@dataclass(frozen=True)
class WorkerLayout:
    """Gunicorn workers and intra-op threads per worker."""

    workers: int
    threads: int


def worker_layout(workers: int = 0, threads: int = 0, cpus: int | None = None) -> WorkerLayout:
    """The one place worker and thread defaults are computed: 0 means "fill the cores", so
    workers x threads fits the available cores and never oversubscribes them."""
    cpus = cpus or available_cpus()
    if not workers:
        workers = max(1, cpus // threads) if threads else cpus
    if not threads:
        threads = max(1, cpus // workers)
    return WorkerLayout(workers, threads)


# -- declaring a setting ----------------------------------------------------------------------------
def at_least(minimum: float, *, exclusive: bool = False) -> Callable[[object], str | None]:
    def check(value):
        if value < minimum or (exclusive and value == minimum):
            return f"must be {'more than' if exclusive else 'at least'} {minimum:g}"
        return None
    return check


def readable_file(value: str) -> str | None:
    """Empty, or a file this process can read."""
    if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
        return "no readable file there"
    return None


def one_of(*choices: str) -> Callable[[object], str | None]:
    def check(value):
        return None if value in choices else "expected one of " + ", ".join(repr(c) for c in choices)
    return check


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: the name requests give (empty: its id) and where it is (``EMBEDDER_MODEL``'s
    forms: a hub id, a directory, or empty for the bundled model)."""

    name: str
    ref: str


@dataclass(frozen=True)
class Spec:
    """One setting as declared: what the README table, the parser and the checks read."""

    name: str
    env: str
    type: type
    default: object
    doc: str
    shown: str
    check: Callable[[object], str | None] | None
    secret: bool
    aliases: tuple[str, ...]


def setting(default, doc: str, *, env: str | None = None, check=None, shown: str | None = None,
            secret: bool = False, aliases: tuple[str, ...] = ()):
    """Declare a setting: its default, a one-line doc, a check (returns an error or None), how the
    README shows the default (``shown``), whether it is a secret (never printed or recorded), and
    older variable names that still work (``aliases``)."""
    meta = {"doc": doc, "env": env, "check": check, "shown": shown, "secret": secret, "aliases": aliases}
    return field(default=default, repr=not secret, metadata={"setting": meta})


@dataclass(frozen=True)
class Settings:
    """The service's settings; each field is read from ``EMBEDDER_<FIELD NAME IN CAPITALS>``
    unless it names another variable."""

    bind: str = setting("127.0.0.1:8000", "address Gunicorn listens on (`0.0.0.0:8000` for all interfaces)")
    workers: int = setting(0, "Gunicorn workers", check=at_least(0),
                           shown="`0` = available cores (affinity, capped by the cgroup CPU quota) "
                                 "÷ threads per worker")
    threads: int = setting(0, "intra-op threads per worker, torch's or ONNX Runtime's (inter-op: 1)",
                           check=at_least(0), aliases=(PREFIX + "TORCH_THREADS",),
                           shown="`0` = available cores ÷ workers, at least 1")
    http_threads: int = setting(32, "request threads per worker (a request gets one once its whole body "
                                    "has arrived); caps how many requests one worker can batch together",
                                check=at_least(1))
    max_connections: int = setting(1000, "most open connections per worker; a new one beyond it closes "
                                         "the oldest that holds no request", check=at_least(1))
    header_timeout: float = setting(10.0, "seconds a new connection has to send its first request's headers "
                                          "(408 and closed after; a kept-alive connection has 5 s for the "
                                          "next one's)", check=at_least(0, exclusive=True))
    body_timeout: float = setting(10.0, "seconds a request body has to arrive, plus 1 s per "
                                        "`EMBEDDER_BODY_MIN_RATE` bytes received (408 and closed after)",
                                  check=at_least(0, exclusive=True))
    body_min_rate: int = setting(1024, "bytes per second a slow body must keep up to earn more time",
                                 check=at_least(1))
    send_timeout: float = setting(10.0, "seconds a response may wait for its client to take any of its "
                                        "bytes (nginx's `send_timeout`); then the connection is closed",
                                  check=at_least(0, exclusive=True))
    model: str = setting("", "the model: a hub model id (`name` or `org/name`, as text-embeddings-inference's "
                             "`--model-id`) or a local sentence-transformers model directory; a path that "
                             "exists is a directory, anything else shaped like `name` or `org/name` is a hub "
                             "id, found in (or downloaded into) the Hugging Face cache (see "
                             "[models](docs/models.md))",
                         shown="empty = bundled all-MiniLM-L6-v2")
    models: str = setting("", "several models in one server, comma-separated, each `[name=]model` (a hub id or a "
                              "directory, as `EMBEDDER_MODEL`; `name=` with nothing after it is the bundled "
                              "model): embedding models and rerankers (cross-encoders), the kind read from each "
                              "model's files; `name` is what requests give as `model` (default: the hub id or "
                              "directory name); TEI's routes serve the first of each kind (see "
                              "[Several models](#several-models-and-rerankers))",
                          shown="empty = `EMBEDDER_MODEL` alone")
    revision: str = setting("", "the hub model's branch, tag or commit (text-embeddings-inference's "
                                "`--revision`); only with a hub id", shown="empty = `main`")
    model_id: str = setting("", "name reported by `/info` and in OpenAI's `model` field",
                            shown=f"the hub id, else the directory name; `{DEFAULT_MODEL_ID}` for the bundled one")
    trust_remote_code: bool = setting(False, "let a model run code of its own (a custom module in "
                                             "`modules.json`, an `auto_map` class), as sentence-transformers' "
                                             "`trust_remote_code`; off, such a model is refused at start")
    backend: str = setting("onnx", "inference backend: `onnx` (ONNX Runtime), `torch` (PyTorch) or `openvino` "
                                   "(OpenVINO, the onnx backend's exported graph); same vectors, see "
                                   "[ONNX Runtime backend](#onnx-runtime-backend) and "
                                   "[OpenVINO](docs/how-it-works.md#openvino-backend)",
                           check=one_of(*BACKENDS))
    precision: str = setting("float32", "numeric precision: `float32`; `bfloat16` (openvino only, on a CPU "
                                        "with native bf16: `avx512_bf16` or `amx_bf16`, refused at start "
                                        "elsewhere); `int8`: dynamic int8 weights, per channel (onnx only); each "
                                        "passes a [fidelity gate](docs/how-it-works.md#openvino-backend)",
                             check=one_of(*PRECISIONS))
    quantize: str = setting("", "`int8`: the same as `EMBEDDER_PRECISION=int8` (its older name, still read)",
                            check=one_of(*QUANTIZATIONS), shown="empty")
    cache_dir: str = setting("", "where exported, quantized and serving-form (shared-weights) ONNX "
                                 "files are kept; must be writable",
                             shown="`~/.cache/embedder`")
    max_batch_size: int = setting(64, "most inputs in one forward pass", check=at_least(1))
    max_batch_tokens: int = setting(8192, "most padded tokens (inputs × longest) in one forward pass",
                                    check=at_least(1))
    max_queued_inputs: int = setting(2048, "most inputs waiting in one worker; beyond it requests get 429",
                                     check=at_least(1))
    max_queued_tokens: int = setting(65536, "most tokens waiting in one worker (8 full passes of the default "
                                            "`EMBEDDER_MAX_BATCH_TOKENS`); beyond it requests get 429",
                                     check=at_least(1))
    request_timeout: float = setting(30.0, "seconds a request may wait for its vectors; then 503 and its "
                                           "inputs leave the queue", check=at_least(0, exclusive=True))
    stall_timeout: float = setting(60.0, "seconds one forward pass may run before the worker is declared "
                                         "hung and replaced", check=at_least(0, exclusive=True))
    max_inputs: int = setting(256, "most inputs per request (422 beyond)", check=at_least(1))
    max_documents: int = setting(1000, "most documents per rerank request (422 beyond); each is one "
                                       "input for the queue limits", check=at_least(1))
    max_input_chars: int = setting(20000, "most characters per input, or token ids per token-id input, "
                                          "checked before truncation (422 beyond)", check=at_least(1))
    max_tokenize_tokens: int = setting(65536, "most tokens one `/tokenize` answer may hold (all its inputs, "
                                              "special tokens included; counted while tokenizing, which stops "
                                              "at the limit) and most token ids one `/decode` request may send "
                                              "(422 beyond); the answers being built in one worker hold at most "
                                              "`EMBEDDER_MAX_QUEUED_TOKENS` together (429 beyond)",
                                       check=at_least(1))
    openai_token_ids: bool = setting(False, "take token-id input on `/v1/embeddings` as ids of the served "
                                            "model's own vocabulary; off: 422, since OpenAI clients that send "
                                            "ids (LangChain's default) send tiktoken's, of another vocabulary")
    max_body_bytes: int = setting(4 * 1024 * 1024, "most bytes per request body (413 beyond)",
                                  check=at_least(1))
    api_key: str = setting("", "when set, every route but `/health` and `/openapi.json` needs "
                               "`Authorization: Bearer <key>` (401 otherwise); never logged or recorded",
                           secret=True, shown="empty = no auth")
    metrics_require_key: bool = setting(False, "whether `/metrics` needs the key too")
    log_level: str = setting("info", "log level of Gunicorn and embedder",
                             check=one_of("debug", "info", "warning", "error", "critical"))
    access_log: str = setting("", "access log path (`-` for stdout)", shown="empty = off")
    tls_cert: str = setting("", "PEM certificate (chain) file: with `EMBEDDER_TLS_KEY`, serve HTTPS only "
                                "(Gunicorn's `certfile`)", check=readable_file, shown="empty = plain HTTP")
    tls_key: str = setting("", "PEM private key file of `EMBEDDER_TLS_CERT` (Gunicorn's `keyfile`)",
                           check=readable_file, shown="empty")
    metrics_dir: str = setting("", "parent of the per-master metrics directory (see [Metrics](#metrics))",
                               env="PROMETHEUS_MULTIPROC_DIR", shown="system temp dir")

    def __post_init__(self) -> None:
        for spec in specs():
            value = getattr(self, spec.name)
            if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, spec.name, float(value))
                value = float(value)
            if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
                raise ValueError(f"{spec.env}={value!r}: expected {spec.type.__name__}")
            problem = spec.check(value) if spec.check else None
            if problem:
                raise ValueError(f"{spec.env}={value!r}: {problem}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError(f"{PREFIX}TLS_CERT and {PREFIX}TLS_KEY go together: set both for HTTPS, or neither")
        if self.models:
            if self.model or self.model_id or self.revision:
                raise ValueError(f"{PREFIX}MODELS lists the models (with their names); {PREFIX}MODEL, "
                                 f"{PREFIX}MODEL_ID and {PREFIX}REVISION are for one model alone: unset them")
            self.model_specs()  # refuses a malformed list now
        named = (f"{PREFIX}QUANTIZE={self.quantize!r}" if self.quantize
                 else f"{PREFIX}PRECISION={self.precision!r}")
        if self.quantize:  # the older name of EMBEDDER_PRECISION=int8
            if self.precision not in ("float32", self.quantize):
                raise ValueError(f"{PREFIX}QUANTIZE={self.quantize!r} and {PREFIX}PRECISION={self.precision!r} "
                                 f"disagree: set {PREFIX}PRECISION alone")
            object.__setattr__(self, "precision", self.quantize)
        elif self.precision == "int8":
            object.__setattr__(self, "quantize", "int8")  # for readers of the older name
        if self.precision not in BACKEND_PRECISIONS[self.backend]:
            runs = [b for b in BACKENDS if self.precision in BACKEND_PRECISIONS[b]]
            raise ValueError(f"{named} needs {PREFIX}BACKEND={' or '.join(runs)} ({PREFIX}BACKEND="
                             f"{self.backend} runs {', '.join(BACKEND_PRECISIONS[self.backend])})")

    # -- reading ------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment; an unset or empty variable keeps the default. A bad
        value raises ValueError naming the variable."""
        environ = os.environ if environ is None else environ
        values = {}
        for spec in specs():
            for name in (spec.env, *spec.aliases):
                raw = environ.get(name)
                if raw is not None and raw.strip() != "":
                    values[spec.name] = parse(spec, raw, name)
                    break
        return cls(**values)

    def environment(self) -> dict[str, str]:
        """The variables that differ from the defaults, secrets left out: safe to log or record."""
        return {spec.env: str(getattr(self, spec.name)) for spec in specs()
                if not spec.secret and getattr(self, spec.name) != spec.default}

    # -- derived values -----------------------------------------------------------------------
    @property
    def backend_label(self) -> str:
        return backend_label(self.backend, self.precision)

    def layout(self, workers: int | None = None) -> WorkerLayout:
        """Workers and threads per worker; ``workers`` is the count really running (Gunicorn's
        ``-w`` or ``GUNICORN_CMD_ARGS`` may override the setting)."""
        return worker_layout(workers or self.workers, self.threads)

    def model_specs(self) -> list[ModelSpec]:
        """The models to serve, in order: EMBEDDER_MODELS' entries, else EMBEDDER_MODEL alone."""
        if not self.models:
            return [ModelSpec(self.model_id, self.model)]
        specs, names = [], set()
        for entry in self.models.split(","):
            entry = entry.strip()
            if not entry:
                continue
            name, equals, ref = entry.partition("=")
            name, ref = (name.strip(), ref.strip()) if equals else ("", entry)
            if equals and not name:
                raise ValueError(f"{PREFIX}MODELS: {entry!r} has an empty name before '='")
            if name and (name in names or any(c.isspace() for c in name)):
                raise ValueError(f"{PREFIX}MODELS: the name {name!r} is " +
                                 ("given twice" if name in names else "not one word"))
            names.add(name)
            specs.append(ModelSpec(name, ref))
        if not specs:
            raise ValueError(f"{PREFIX}MODELS={self.models!r} lists no model")
        return specs

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else Path.home() / ".cache" / "embedder"


def specs() -> list[Spec]:
    """Every setting as declared on :class:`Settings`, in declaration order."""
    out = []
    for f in fields(Settings):
        meta = f.metadata["setting"]
        out.append(Spec(name=f.name, env=meta["env"] or PREFIX + f.name.upper(), type=type(f.default),
                        default=f.default, doc=meta["doc"], shown=meta["shown"] or _shown(f.default),
                        check=meta["check"], secret=meta["secret"], aliases=meta["aliases"]))
    return out


def parse(spec: Spec, raw: str, name: str | None = None):
    """One variable's text as the setting's type; ValueError names the variable."""
    name = name or spec.env
    text = raw.strip()
    if spec.type is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={raw!r} is not a boolean (true/false, yes/no, on/off, 1/0)")
    if spec.type is str:
        return text
    try:
        return spec.type(text)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not {'an integer' if spec.type is int else 'a number'}") from None


def _shown(default) -> str:
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`" if default != "" else "empty"


def markdown_table() -> str:
    """The README's configuration table, generated from the declarations."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for spec in specs():
        doc = spec.doc
        if spec.aliases:
            doc += " (also read from " + ", ".join(f"`{a}`" for a in spec.aliases) + ", its old name)"
        lines.append(f"| `{spec.env}` | {spec.shown} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m embedder.config: print the README's configuration table
    sys.stdout.write(markdown_table())
