"""The tuner: which backend, precision and worker layout serve the configured model fastest on this
machine, and what leaving the defaults (onnx float32: sentence-transformers' vectors) would cost.

    python -m bench.tools.tune [--backends onnx,onnx-int8,...] [--layouts 2x1,1x2] [--duration S]
                               [--warmup S] [--env-file embedder.env] [--json PATH] [--no-default]

For each backend label (EMBEDDER_BACKEND x EMBEDDER_PRECISION; bfloat16 only on a CPU with native
bf16) and each layout (EMBEDDER_WORKERS x EMBEDDER_THREADS, workers x threads = the available cores),
one real server (bench/harness/servers.py) is started with the configured model (EMBEDDER_MODEL and
the rest of the environment) and measured as the sweep measures a row (bench/sweep/run.py's
``measure``): a warm-up, then ``wrk -t 8 -c 32`` of the ``embed1long`` workload (single real STS-B
texts of mixed lengths) for ``--duration`` seconds; sentences/s, p99, and the PSS of the whole
server after the load. The default configuration (onnx float32, the default layout) is always one
of them: it is the figure the gain is against.

Fidelity, once per backend label, on that label's first server: the vectors of a fixed subset of
STS-B test sentences (every FIDELITY_STEP-th of the 2,552 distinct ones) against the onnx float32
server's, their worst cosine and largest element difference; a label passes when the worst
cosine meets its precision's gate (bench/tools/stsb_eval.py's GATES). The full gate (every sentence
and the STS-B score) is tests/integration/test_accuracy.py's, or ``python -m bench.tools.stsb_eval
--reference``.

The recommendation: the highest sentences/s among the servers that passed their gate with no
failed request. The env file (``--env-file``, default ./embedder.env) gets its EMBEDDER_BACKEND,
EMBEDDER_PRECISION, EMBEDDER_WORKERS and EMBEDDER_THREADS under a comment header (machine, CPU
flags, date, the figures, the fidelity it costs), and the best exact float32 configuration (within
EXACT_MAX_DIFF of the default's vectors) as a commented alternative. ``make serve``, the systemd
unit and the Kubernetes overlay deploy/k8s/tuned read that file (docs/tuning.md). The table and the
summary go to stdout, the progress bar to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embedder.config import BACKEND_LABELS, Settings, available_cpus, specs, worker_layout

from ..harness.servers import ROOT, start_embedder
from ..harness.stsb import unique_sentences
from ..sweep.run import BACKENDS, machine_info, measure
from ..sweep.schema import Median
from ..sweep.workloads import WORKLOADS, WrkOptions, workload_sentences, write_bodies
from .stsb_eval import GATES, embed, fidelity

#: The real-text load: one input per request, STS-B sentences joined into mixed lengths.
WORKLOAD = WORKLOADS["embed1long"]
#: The fidelity subset: every FIDELITY_STEP-th distinct STS-B test sentence (all genres, all lengths).
FIDELITY_STEP = 5
#: Largest element difference to the default's (unit) vectors that still counts as exact float32:
#: the default itself keeps sentence-transformers' vectors within 1e-5.
EXACT_MAX_DIFF = 1e-5
#: The default configuration's backend label: the reference of every fidelity figure.
REFERENCE = Settings().backend_label
#: The settings the env file sets, by Settings field; their variable names come from embedder/config.py.
TUNED = ("backend", "precision", "workers", "threads")
ENV_NAMES = {spec.name: spec.env for spec in specs() if spec.name in TUNED}
DEFAULT_ENV_FILE = ROOT / "embedder.env"


@dataclass(frozen=True)
class Candidate:
    """One server to measure: a backend label and a layout."""

    backend: str  # a label of BACKEND_LABELS: onnx, onnx-int8, torch, openvino, openvino-bf16
    workers: int
    threads: int
    default: bool = False  # what `gunicorn -c gunicorn.conf.py wsgi:app` runs with no EMBEDDER_* set

    @property
    def layout(self) -> str:
        return f"{self.workers}x{self.threads}"

    @property
    def precision(self) -> str:
        return BACKEND_LABELS[self.backend][1]

    def settings(self) -> dict[str, str]:
        """The env file's variables for this candidate."""
        backend, precision = BACKEND_LABELS[self.backend]
        values = {"backend": backend, "precision": precision, "workers": self.workers, "threads": self.threads}
        return {ENV_NAMES[name]: str(values[name]) for name in TUNED}


@dataclass
class Fidelity:
    """A backend label's vectors against the reference's, on the fixed subset."""

    sentences: int
    worst_cosine: float
    max_abs_diff: float
    min_cosine: float  # the gate of its precision
    passed: bool

    @property
    def exact(self) -> bool:
        return self.max_abs_diff <= EXACT_MAX_DIFF


@dataclass
class Result:
    """One candidate's measurement; ``error`` says why there is none."""

    candidate: Candidate
    sentences_per_s: float | None = None
    p99_ms: float | None = None
    pss_mib: float | None = None
    failed_requests: int = 0  # non-2xx answers and socket errors during the load
    fidelity: Fidelity | None = None
    error: str | None = None

    @property
    def eligible(self) -> bool:
        return (self.error is None and self.sentences_per_s is not None and self.failed_requests == 0
                and self.fidelity is not None and self.fidelity.passed)

    @property
    def exact(self) -> bool:
        return self.eligible and self.candidate.precision == "float32" and self.fidelity.exact


@dataclass
class Choice:
    """The tuner's verdict: the pick, the best exact float32 configuration, the default's row."""

    pick: Result | None
    exact: Result | None
    default: Result | None
    notes: list[str] = field(default_factory=list)

    def gain(self, result: Result | None) -> float | None:
        """How much faster than the default ``result`` is, as a fraction (0.5 = 50 % more sentences/s)."""
        if result is None or self.default is None or not self.default.sentences_per_s:
            return None
        return result.sentences_per_s / self.default.sentences_per_s - 1


# -- the plan -------------------------------------------------------------------------------------

def parse_layouts(text: str) -> list[tuple[int, int]]:
    """'2x1, 1x2' -> [(2, 1), (1, 2)] (workers x threads), without repeats."""
    layouts = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        workers, sep, threads = item.partition("x")
        if not sep or not workers.isdigit() or not threads.isdigit() or int(workers) < 1 or int(threads) < 1:
            raise ValueError(f"layout {item!r}: expected WORKERSxTHREADS, e.g. 2x1")
        layouts.append((int(workers), int(threads)))
    if not layouts:
        raise ValueError("no layout given")
    return list(dict.fromkeys(layouts))


def default_layouts(cores: int) -> list[tuple[int, int]]:
    """Layouts that fill the cores: 1, 2 and 4 threads per worker where they divide the cores
    (2 cores: 2x1 and 1x2; 16: 16x1, 8x2 and 4x4)."""
    return [(cores // t, t) for t in (1, 2, 4) if t <= cores and cores % t == 0]


def plan(backends: list[str], layouts: list[tuple[int, int]], cores: int, with_default: bool = True) -> list[Candidate]:
    """Every backend label x layout, grouped by label, the reference (onnx float32) first so its
    vectors are there for the others' fidelity; the default configuration added if not among them."""
    default_layout = worker_layout(0, 0, cores)
    default = (REFERENCE, default_layout.workers, default_layout.threads)
    wanted = [(b, w, t) for b in backends for w, t in layouts]
    if with_default and default not in wanted:
        wanted.insert(0, default)
    wanted.sort(key=lambda c: c[0] != REFERENCE)  # stable: the reference's servers first
    return [Candidate(b, w, t, default=(b, w, t) == default) for b, w, t in wanted]


def fidelity_sentences() -> list[str]:
    """The fixed subset the fidelity column is measured on."""
    return unique_sentences()[::FIDELITY_STEP]


def compare(vectors: dict[str, np.ndarray], reference: dict[str, np.ndarray], precision: str) -> Fidelity:
    """The worst cosine (stsb_eval.fidelity) and the largest element difference of the unit vectors,
    and whether the precision's gate holds for every sentence of the subset."""
    gate = GATES[precision]
    found = fidelity(vectors, reference, gate.min_sentence_cosine)
    names = sorted(reference)
    a = np.stack([vectors[n] / np.linalg.norm(vectors[n]) for n in names])
    b = np.stack([reference[n] / np.linalg.norm(reference[n]) for n in names])
    return Fidelity(sentences=len(names), worst_cosine=found["worst_cosine"],
                    max_abs_diff=float(np.abs(a - b).max()), min_cosine=gate.min_sentence_cosine,
                    passed=found["below_min_cosine"] == 0)


# -- the verdict ----------------------------------------------------------------------------------

def choose(results: list[Result], min_cosine: float = 0.0) -> Choice:
    """The recommendation rule: the highest sentences/s among the results that passed their gate
    (and kept every vector at ``min_cosine`` or more to the default's) with no failed request; and
    the same among the exact float32 ones."""
    eligible = [r for r in results if r.eligible and r.fidelity.worst_cosine >= min_cosine]
    pick = max(eligible, key=lambda r: r.sentences_per_s, default=None)
    exact = max((r for r in eligible if r.exact), key=lambda r: r.sentences_per_s, default=None)
    default = next((r for r in results if r.candidate.default), None)
    choice = Choice(pick, exact, default)
    if default is None:
        choice.notes.append("the default configuration was not measured (--no-default): no gain to report")
    elif default.sentences_per_s is None:
        choice.notes.append(f"the default configuration failed: {default.error}")
    if pick is None:
        choice.notes.append("no configuration passed: nothing to recommend")
    return choice


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:+.0f} %"


def table(results: list[Result], choice: Choice) -> str:
    """The results as a Markdown table, in measuring order, the pick and the alternatives marked."""
    lines = ["| backend | precision | workers × threads | sentences/s | vs default | p99 ms | PSS MiB "
             "| worst cosine | max abs diff | gate | |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in results:
        c, f = r.candidate, r.fidelity
        marks = [label for label, chosen in (("default", c.default), ("**pick**", r is choice.pick),
                                             ("best exact float32", r is choice.exact)) if chosen]
        if r.error:
            marks.append(f"failed: {r.error.splitlines()[0][:120]}")
        elif r.failed_requests:
            marks.append(f"{r.failed_requests} failed requests")
        gate = "—" if f is None else (f"pass (≥ {f.min_cosine})" if f.passed else f"FAIL (< {f.min_cosine})")
        gain = "" if c.default else _percent(choice.gain(r) if r.sentences_per_s else None)
        lines.append(
            f"| {BACKEND_LABELS[c.backend][0]} | {c.precision} | {c.workers} × {c.threads} "
            f"| {_number(r.sentences_per_s)} | {gain} | {_number(r.p99_ms, 0)} | {_number(r.pss_mib, 0)} "
            f"| {'—' if f is None else f'{f.worst_cosine:.6f}'} | {'—' if f is None else f'{f.max_abs_diff:.1e}'} "
            f"| {gate} | {', '.join(marks)} |")
    return "\n".join(lines)


def describe(r: Result) -> str:
    c = r.candidate
    return (f"{BACKEND_LABELS[c.backend][0]} {c.precision}, {c.workers} x {c.threads}: "
            f"{_number(r.sentences_per_s)} sentences/s, "
            f"p99 {_number(r.p99_ms, 0)} ms, PSS {_number(r.pss_mib, 0)} MiB")


def fidelity_cost(r: Result) -> str:
    f = r.fidelity
    if r.exact:
        return (f"none: float32, vectors within {f.max_abs_diff:.1e} of the default's "
                f"(sentence-transformers' within {EXACT_MAX_DIFF:g})")
    gate = GATES[r.candidate.precision]
    return (f"{r.candidate.precision}: worst cosine {f.worst_cosine:.6f} to the default's vectors over "
            f"{f.sentences} STS-B sentences, largest element difference {f.max_abs_diff:.1e} "
            f"(its gate: every sentence >= {gate.min_sentence_cosine}, STS-B within "
            f"{gate.max_spearman_drop} points)")


def summary(choice: Choice, sentences: int) -> list[str]:
    lines = []
    if choice.default and choice.default.sentences_per_s is not None:
        lines.append(f"default: {describe(choice.default)}; vectors: sentence-transformers' within "
                     f"{EXACT_MAX_DIFF:g}")
    if choice.pick:
        gain = choice.gain(choice.pick)
        lines.append(f"pick: {describe(choice.pick)}"
                     + (f"; {_percent(gain)} sentences/s over the default" if gain is not None else ""))
        lines.append(f"fidelity it costs: {fidelity_cost(choice.pick)}")
    if choice.exact and choice.exact is not choice.pick:
        lines.append("best exact float32: " + ("the default" if choice.exact is choice.default else
                                               f"{describe(choice.exact)}; {_percent(choice.gain(choice.exact))} "
                                               "over the default" if choice.default else describe(choice.exact)))
    lines.append(f"fidelity column: each backend's vectors of {sentences} STS-B test sentences (every "
                 f"{FIDELITY_STEP}th distinct one), through its server, against the default's "
                 f"({REFERENCE} float32); the full gate (all 2,552 sentences and the STS-B score) is "
                 "tests/integration/test_accuracy.py or python -m bench.tools.stsb_eval --reference")
    return lines + [f"note: {note}" for note in choice.notes]


# -- the env file ---------------------------------------------------------------------------------

def env_text(choice: Choice, machine: dict, load: str) -> str:
    """The env file: a comment header, the pick's settings, the best exact float32 ones commented out.
    KEY=VALUE lines and # comments only: what systemd's EnvironmentFile=, kustomize's ``envs:`` and
    a POSIX shell's ``.`` all read."""
    pick = choice.pick
    if pick is None:
        raise ValueError("no configuration passed: nothing to write")
    gain = choice.gain(pick)
    header = [
        f"embedder settings from `python -m bench.tools.tune` (make tune), {machine['date']}",
        f"machine: {machine['host']}, {machine['cpu']}, {machine['cores']} available cores, "
        f"{machine['memory_gib']} GiB",
        f"CPU flags: {machine['flags'] or 'unknown'}",
        f"load: {load}",
        f"figure: {describe(pick)}",
        f"against the default (onnx float32, {choice.default.candidate.workers} x "
        f"{choice.default.candidate.threads}): {_number(choice.default.sentences_per_s)} sentences/s, "
        f"{_percent(gain)}" if gain is not None else "against the default: not measured",
        f"fidelity it costs: {fidelity_cost(pick)}",
        "read by: make serve (./embedder.env), systemd (/etc/embedder/embedder.env), "
        "Kubernetes (deploy/k8s/tuned/embedder.env); see docs/tuning.md",
    ]
    lines = [f"# {line}" for line in header]
    lines += [f"{name}={value}" for name, value in pick.candidate.settings().items()]
    if choice.exact and choice.exact is not pick:
        exact = choice.exact
        lines.append(f"# Best exact float32 (sentence-transformers' vectors): {describe(exact)}"
                     + (" (the default)" if exact is choice.default else
                        f", {_percent(choice.gain(exact))} over the default" if choice.default else ""))
        lines += [f"#{name}={value}" for name, value in exact.candidate.settings().items()]
    return "\n".join(lines) + "\n"


def read_env(path: str | Path) -> dict[str, str]:
    """The KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    values = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip()
    return values


def write_env(path: str | Path, text: str) -> dict[str, str]:
    """Write the env file (atomically), then read it back and check it as the server would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    values = read_env(tmp)
    Settings.from_env(values)  # raises ValueError naming a bad variable
    tmp.replace(path)
    return values


# -- measuring ------------------------------------------------------------------------------------

def machine(cores: int) -> dict:
    """What the header says about the machine (bench/sweep/run.py's machine_info, plus CPU flags)."""
    info = machine_info(cores)
    return {"host": info.host, "cpu": info.cpu_model or "unknown CPU", "cores": cores,
            "memory_gib": info.memory_gib, "flags": " ".join(info.cpu_flags),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "git": info.git, "loadavg_start": info.loadavg_start}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def run(candidates: list[Candidate], args, progress) -> list[Result]:
    """Start, check and load each candidate's server in turn; a failure is recorded, the rest go on."""
    sentences = fidelity_sentences()
    reference: dict[str, np.ndarray] | None = None
    fidelities: dict[str, Fidelity] = {}
    results = []
    load_args = argparse.Namespace(warmup=args.warmup, duration=args.duration)
    with tempfile.TemporaryDirectory(prefix="tune-bodies-") as tmp:
        bodies = write_bodies(WORKLOAD, workload_sentences(WORKLOAD), Path(tmp))
        if REFERENCE not in {c.backend for c in candidates}:
            progress.set_description(f"{REFERENCE} (reference vectors)")
            server = start_embedder(REFERENCE, 1, None, None, args.start_timeout)
            try:
                reference = embed(server.url, sentences)
            finally:
                server.stop()
        for c in candidates:
            result = Result(c)
            results.append(result)
            server = None
            try:
                progress.set_description(f"{c.backend} {c.layout}: starting")
                server = start_embedder(c.backend, c.workers, c.threads, None, args.start_timeout)
                served = (server.info["workers"], server.info["threads_per_worker"])
                if served != (c.workers, c.threads):
                    raise RuntimeError(f"the server runs {served[0]}x{served[1]}, not {c.layout}")
                if c.backend not in fidelities:
                    progress.set_description(f"{c.backend} {c.layout}: fidelity")
                    vectors = embed(server.url, sentences)
                    if c.backend == REFERENCE:
                        reference = vectors
                    if reference is None:
                        raise RuntimeError(f"no reference vectors: the {REFERENCE} server failed")
                    fidelities[c.backend] = compare(vectors, reference, c.precision)
                result.fidelity = fidelities[c.backend]
                progress.set_description(f"{c.backend} {c.layout}: {args.duration:g} s of {WORKLOAD.name}")
                runs, errors, _ = measure(server, WORKLOAD, bodies, load_args, WrkOptions(), 1)
                if errors:
                    raise RuntimeError(errors[0])
                median = Median.of(runs)
                result.sentences_per_s, result.p99_ms = median.sentences_per_s, median.latency_p99_ms
                result.pss_mib = median.pss_mib  # after the load: openvino's memory grows with shapes
                result.failed_requests = median.non_2xx_total + median.socket_errors_total
            except Exception as exc:  # noqa: BLE001 - recorded; the other candidates go on
                result.error = _error(exc)
                progress.write(f"{c.backend} {c.layout}: FAILED: {result.error.splitlines()[0][:300]}",
                               file=sys.stderr)
            finally:
                if server is not None:
                    server.stop()
            progress.update(1)
            if result.error is None:
                progress.write(f"{describe(result)}, worst cosine {result.fidelity.worst_cosine:.6f}",
                               file=sys.stderr)
    return results


def parse_args(argv=None) -> argparse.Namespace:
    cores = available_cpus()
    layouts = ",".join(f"{w}x{t}" for w, t in default_layouts(cores))
    parser = argparse.ArgumentParser(prog="python -m bench.tools.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"backend labels to measure (here: {','.join(BACKENDS)})")
    parser.add_argument("--layouts", default=layouts,
                        help=f"workers x threads per worker to measure (here, {cores} cores: {layouts})")
    parser.add_argument("--duration", type=float, default=6, help="seconds of wrk load per server (6)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unrecorded load first (2)")
    parser.add_argument("--default", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also measure the default configuration ({REFERENCE} float32 at the default "
                             "layout), the figure the gain is against (yes)")
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE,
                        help="where the recommended settings go (./embedder.env)")
    parser.add_argument("--min-cosine", type=float, default=0.0,
                        help="pick only what keeps every vector at this cosine or more to the default's "
                             "(e.g. 0.999: bfloat16 yes, int8 no); default: each precision's own gate")
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds a server may take to start")
    args = parser.parse_args(argv)
    args.backends = list(dict.fromkeys(b.strip() for b in args.backends.split(",") if b.strip()))
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends: expected some of {', '.join(BACKENDS)}, got {args.backends}")
    try:
        args.layouts = parse_layouts(args.layouts)
    except ValueError as exc:
        parser.error(f"--layouts: {exc}")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # servers.py's atexit hook then stops what is running
    cores = available_cpus()
    host = machine(cores)
    candidates = plan(args.backends, args.layouts, cores, args.default)
    began = time.monotonic()
    print(f"tuning on {host['host']} ({host['cpu']}, {cores} cores, load average "
          f"{host['loadavg_start'][0]:.2f}): {len(candidates)} servers, {WORKLOAD.name} "
          f"({WORKLOAD.description}), {args.duration:g} s each", file=sys.stderr, flush=True)
    with tqdm(total=len(candidates), unit="server", file=sys.stderr, dynamic_ncols=True) as progress:
        results = run(candidates, args, progress)
    elapsed = time.monotonic() - began
    load = (f"load average {host['loadavg_start'][0]:.2f} at the start and {os.getloadavg()[0]:.2f} at the "
            f"end on {cores} cores; {args.duration:g} s of wrk -t 8 -c 32 of {WORKLOAD.name} per server, one run each")
    choice = choose(results, args.min_cosine)
    print(table(results, choice))
    print()
    for line in summary(choice, len(fidelity_sentences())):
        print(line)
    print(f"took {elapsed:.0f} s; {load}")
    if args.json:
        args.json.write_text(json.dumps({"machine": host, "load": load, "seconds": round(elapsed, 1),
                                         "results": [asdict(r) for r in results],
                                         "pick": asdict(choice.pick.candidate) if choice.pick else None,
                                         "exact": asdict(choice.exact.candidate) if choice.exact else None},
                                        indent=1) + "\n")
    if choice.pick is None:
        print(f"nothing written to {args.env_file}", file=sys.stderr)
        return 1
    write_env(args.env_file, env_text(choice, host, load))
    print(f"wrote {args.env_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
