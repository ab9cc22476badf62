"""The benchmark's results, as ``python -m bench.sweep`` writes them to ``<date>-<host>.json``: the one
definition that the runner builds, the report reads and the tests check.

Every record is a dataclass. ``to_dict()`` is its JSON; ``from_dict()`` reads it back strictly (a
field this file does not declare is an error), so a change of layout shows at once instead of
turning into a silently missing number.

    Results
      machine: Machine                 where and with what it ran (no secrets)
      workloads: {name: Workload}
      baselines, rows: [Row]           one per server x workload; baselines have no config
        config: Config                 backend, workers x threads, HTTP threads, default or not
        runs: [WrkRun]                 the wrk runs that completed
        errors: [str]                  one per run that did not
        median: Median | None          over runs; None when no run completed
        memory_last_run: Memory | None
      limits: {backend: {sentence set: Limit}}
                                       in-process sorted limit: sentences/s of each backend on
                                       each POST workload's own sentences (bench.tools.ceiling)
      summary: {...}                   derived by bench.sweep.report.summarize: ratios, best, memory
"""

from __future__ import annotations

import json
import statistics
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

#: Bumped when the layout changes; this code reads only its own version. Version 1 (no
#: ``schema_version`` field) came before this file: failed runs inside ``runs``, ``torch_threads`` in
#: configs. Version 2: one ``ceiling`` per backend (all cores, one process, batches of 128, over the
#: STS-B sentences). Version 3: ``limits`` per backend and sentence set (Limit), ``sentence_set`` in
#: workloads, ``root_pids`` in memory, ratios ``vs_limit`` instead of ``vs_ceiling``.
SCHEMA_VERSION = 3


class Record:
    """JSON in and out for the dataclasses below."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return _build(cls, data)


@dataclass(frozen=True)
class Workload(Record):
    """One kind of load wrk puts on a server."""

    name: str
    description: str
    method: str
    path: str
    sentences_per_request: int
    #: POST workloads: the name of the inputs their bodies are made of (bench.sweep.workloads.SENTENCE_SETS);
    #: workloads with the same set share one in-process limit. "" for GET.
    sentence_set: str = ""


@dataclass
class Machine(Record):
    """Where the run ran and with what: the context its numbers need, and never a secret."""

    host: str
    cpu_model: str
    nproc: int
    available_cpus: int  # what the service may use: affinity, capped by the cgroup CPU quota
    kernel: str
    memory_gib: float
    versions: dict[str, str | None]  # package or tool -> version; None if not installed
    git: str  # short commit, "-dirty" if the work tree had changes
    # Settings.from_env().environment(): the EMBEDDER_* settings that differ from the defaults,
    # secrets (EMBEDDER_API_KEY) left out. Never os.environ itself.
    embedder_env: dict[str, str]
    loadavg_start: list[float]
    loadavg_end: list[float] = field(default_factory=list)
    # Which of NOTABLE_CPU_FLAGS the CPU has (what decides int8's and bfloat16's speed); empty in
    # runs before they were recorded, or where the flags cannot be read.
    cpu_flags: list[str] = field(default_factory=list)


#: CPU flags a run records: vector widths, and native int8 (VNNI) and bfloat16 (AVX-512 BF16, AMX)
#: arithmetic.
NOTABLE_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                     "amx_int8")


@dataclass
class Config(Record):
    """One embedder configuration of the sweep."""

    backend: str  # a label of embedder.config.BACKEND_LABELS: onnx, onnx-int8, torch
    workers: int
    threads_setting: int | str  # intra-op threads per worker as asked: a count or "auto"
    threads: int  # as resolved; once the server ran, what its /info reported (threads_per_worker)
    http_threads_setting: int | str  # a count or "default"
    http_threads: int
    default: bool  # what `gunicorn -c gunicorn.conf.py wsgi:app` runs with no EMBEDDER_* set

    @property
    def key(self) -> tuple:
        """What tells two configurations apart once "auto" and "default" are resolved."""
        return self.backend, self.workers, self.threads, self.http_threads


@dataclass
class WrkRun(Record):
    """One wrk run that completed (bench.sweep.workloads.run_wrk), with the server's CPU use over it and
    its memory at the end."""

    requests: int
    duration_s: float
    requests_per_s: float
    sentences_per_s: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    non_2xx: int
    socket_errors: int
    socket_errors_detail: dict[str, int]  # connect, read, write errors and timeouts
    server_cpu_cores: float  # CPU time of the server's processes / wall time
    host_cpu_busy_cores: float  # the whole machine's, load generator included
    pss_mib: float
    private_mib: float
    processes: int


@dataclass
class Median(Record):
    """Medians over a row's completed runs; errors are totals, so that one bad run shows."""

    requests: float
    requests_per_s: float
    sentences_per_s: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    server_cpu_cores: float
    host_cpu_busy_cores: float
    pss_mib: float
    private_mib: float
    processes: float
    non_2xx_total: int
    socket_errors_total: int

    @classmethod
    def of(cls, runs: list[WrkRun]) -> Median | None:
        if not runs:
            return None
        totals = {"non_2xx_total": sum(r.non_2xx for r in runs),
                  "socket_errors_total": sum(r.socket_errors for r in runs)}
        medians = {f.name: round(statistics.median(getattr(r, f.name) for r in runs), 2)
                   for f in fields(cls) if f.name not in totals}
        return cls(**medians, **totals)


@dataclass
class Memory(Record):
    """A server's processes' memory (bench.harness.procstats.memory), in MiB."""

    pss_mib: float  # summed over the processes: shared pages count once in total
    private_mib: float
    processes: int
    pss_mib_by_pid: dict[str, float]
    rss_mib_by_pid: dict[str, float]
    #: The server's own processes (Gunicorn's master; Caddy and its Flask servers); the others in
    #: pss_mib_by_pid are their children (Gunicorn's workers).
    root_pids: list[int] = field(default_factory=list)


@dataclass
class Row(Record):
    """One server on one workload: every run of every round."""

    server: str  # "flask", "caddy" or "embedder"
    workload: str
    config: Config | None  # None for the baselines
    runs: list[WrkRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per failed run (all of them if no server)
    median: Median | None = None
    memory_last_run: Memory | None = None
    server_pids: list[int] = field(default_factory=list)
    served_backend: str | None = None  # the backend the server's /info reported
    server_log: str = ""  # the end of the server's log, kept when a run failed
    ratios: dict[str, float] = field(default_factory=dict)  # vs_flask, vs_caddy, vs_limit (report)

    def add(self, runs: list[WrkRun], errors: list[str]) -> None:
        self.runs += runs
        self.errors += errors
        self.median = Median.of(self.runs)

    @property
    def error(self) -> str | None:
        """Why the row has no numbers (its distinct errors), or None if a run completed."""
        if self.median:
            return None
        return "; ".join(dict.fromkeys(self.errors))[:4000] or "not measured"


@dataclass
class Limit(Record):
    """The in-process sorted limit (bench.tools.ceiling): one backend encoding one sentence set with no
    HTTP, sorted by length into batches of similar length, in ``processes`` processes side by side
    with ``threads`` threads each (by default the server's default layout: one per core, 1 thread).
    What a server on that backend and those cores could at best approach on that workload."""

    backend: str
    sentence_set: str  # bench.sweep.workloads.SENTENCE_SETS
    processes: int
    threads: int  # per process
    batch_size: int
    sentences: int  # in the set (each process cycles over all of its batches)
    # Token counts of the set's inputs, special tokens included, truncated as the server does:
    # min, median, p90, p99, max, mean.
    tokens: dict[str, float] = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)  # sentences/s of each run, all processes together
    errors: list[str] = field(default_factory=list)  # one per round that failed
    sentences_per_s: float | None = None  # median of runs; None if none succeeded

    def add(self, runs: Sequence[float] = (), error: str = "") -> None:
        self.runs += runs
        if error:
            self.errors.append(error)
        self.sentences_per_s = round(statistics.median(self.runs), 2) if self.runs else None


@dataclass
class Results(Record):
    machine: Machine
    options: dict  # bench.sweep's command-line options, as parsed
    command: str
    started: str
    wrk: str  # the wrk command line of every run
    workloads: dict[str, Workload]
    baselines: list[Row] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    limits: dict[str, dict[str, Limit]] = field(default_factory=dict)  # backend -> sentence set -> Limit
    complete: bool = False
    interrupted: bool = False
    finished: str = ""
    summary: dict = field(default_factory=dict)  # bench.sweep.report.summarize(self), or {"error": traceback}
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict) -> Results:
        version = data.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise ValueError(f"results layout version {version}; this code reads version {SCHEMA_VERSION}")
        return super().from_dict(data)

    @classmethod
    def load(cls, path: Path) -> Results:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        """Write atomically, so an interrupted run leaves the last complete file."""
        tmp = Path(path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)


def _build(kind, value):
    """``value`` (parsed JSON) as ``kind``: a dataclass, list[...], dict[str, ...], X | None, or plain."""
    if value is None:
        return None
    if is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        names = {f.name for f in fields(kind)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{kind.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return kind(**{name: _build(hints[name], v) for name, v in value.items()})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        return [_build(args[0], v) for v in value]
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    return value
