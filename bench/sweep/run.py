"""The benchmark command: baselines, a sweep of embedder configurations, wrk on each workload.

    python -m bench.sweep [--duration S] [--repeat N] [--backends onnx,onnx-int8,torch]
                          [--workers 1,2,4] [--threads auto,1]
                          [--http-threads default] [--workloads root,embed1,embed32,embed1long]
                          [--sweep-workloads LIST] [--baseline-workloads root,embed1,embed1long]
                          [--baselines/--no-baselines] [--limit/--no-limit]
                          [--interleave/--no-interleave] [--out-dir DIR]

The sweep is every backend x worker count x threads per worker x HTTP threads; "threads" are torch
intra-op threads for the torch backend and ONNX Runtime intra-op threads for onnx and onnx-int8
(EMBEDDER_THREADS either way). The default configuration runs every workload of --workloads, the
other configurations those of --sweep-workloads (e.g. only root or embed1long, when they are there
for memory and worker counts), the Flask and Caddy baselines those of --baseline-workloads.
One server runs at a time: it is started, measured on each of its workloads (a warm-up, then wrk
runs) and stopped before the next starts. The plan (Flask baseline, Caddy baseline, each sweep
configuration, then the in-process sorted limit of each backend on each sentence set its POST
workloads use: bench/tools/ceiling.py) is run --repeat times in rounds, each round in the reverse order
of the last, so slow drifts in the machine's load fall on every row alike; medians are over rounds.
A server that fails to start or a run that fails is recorded with its error and the rest goes on.
Writes <out-dir>/<date>-<host>.json (bench/sweep/schema.py's Results; <out-dir> defaults to
bench/results/runs/) after every measurement (an interrupted run keeps what it measured), then .md
and .png at the end; the .md opens with issue 13's targets, each measured and passed or failed.
Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from embedder.backends.openvino_backend import cpu_flags, native_bf16
from embedder.config import BACKEND_LABELS, Settings, available_cpus, worker_layout

from ..harness import procstats
from ..harness.servers import ROOT, CaddyFanout, FlaskBaseline, start_embedder
from . import report
from .schema import NOTABLE_CPU_FLAGS, Config, Limit, Machine, Median, Memory, Results, Row, WrkRun
from .workloads import SENTENCE_SETS, WORKLOADS, WrkOptions, run_wrk, workload_sentences, write_bodies

#: Full sweep runs: bench/results/runs/<YYYY-MM-DD>-<host-label>.{json,md,png} (bench/README.md).
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "runs"
#: Backend labels, as the server's /info reports them; bfloat16 only on a CPU that runs it natively
#: (elsewhere the server refuses to start with it).
BACKENDS = tuple(label for label, (_, precision) in BACKEND_LABELS.items()
                 if precision != "bfloat16" or native_bf16())
#: Those a sweep runs unless --backends says otherwise: the openvino rows are asked for by name
#: until the benchmark's report is made for them (issue 23, item 5).
DEFAULT_BACKENDS = tuple(label for label in BACKENDS if BACKEND_LABELS[label][0] != "openvino")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _list(text: str, words: tuple[str, ...] = ()) -> list:
    """'1,2,4' -> [1, 2, 4]; the given words (e.g. 'auto') are kept as strings."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        out.append(item if item in words else int(item))
    return out


def _names(text: str) -> list[str]:
    """'root, embed1' -> ['root', 'embed1'], without repeats."""
    return list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def default_workers_list(cores: int) -> str:
    """1 up to 2 x cores: every count on small machines, powers of two plus cores on big ones;
    always 1, 2 and 4 (the memory comparison)."""
    top = 2 * cores
    counts = set(range(1, top + 1)) if top <= 8 else {2 ** i for i in range(top.bit_length())
                                                      if 2 ** i <= top} | {cores, top}
    counts |= {1, 2, 4}
    return ",".join(str(c) for c in sorted(counts))


def parse_args(argv=None) -> argparse.Namespace:
    cores = available_cpus()
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30, help="seconds per wrk run (30)")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per row; medians reported (3)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unrecorded load first (3)")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"inference backends to sweep, any of {', '.join(BACKENDS)} "
                             f"({', '.join(DEFAULT_BACKENDS)}; the default backend is {Settings().backend_label})")
    parser.add_argument("--workers", default=default_workers_list(cores),
                        help=f"worker counts to sweep (here: {default_workers_list(cores)})")
    parser.add_argument("--threads", "--torch-threads", dest="threads", default="auto,1",
                        help="intra-op threads per worker (torch's, or ONNX Runtime's for onnx); "
                             "auto = cores // workers, as EMBEDDER_THREADS=0 (auto,1); "
                             "--torch-threads is its old name")
    parser.add_argument("--http-threads", default="default",
                        help=f"HTTP threads per worker; default = {Settings().http_threads}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"any of {', '.join(WORKLOADS)} ({','.join(WORKLOADS)}); "
                             + "; ".join(f"{n} = {w.description}" for n, w in WORKLOADS.items()))
    parser.add_argument("--sweep-workloads", default=None,
                        help="the workloads of the configurations other than the default one, a "
                             "subset of --workloads (all of them); e.g. 'embed1long' to measure "
                             "memory and worker counts on real text without every workload")
    parser.add_argument("--baseline-workloads", default="root,embed1,embed1long",
                        help="the workloads of the Flask and Caddy baselines, where also in "
                             "--workloads (root,embed1,embed1long)")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the Flask and Caddy baselines (yes)")
    parser.add_argument("--limit", "--ceiling", dest="limit", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="measure the in-process sorted limit (bench/tools/ceiling.py) of each backend "
                             "on each sentence set its POST workloads use; --ceiling is its old name "
                             "(yes)")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=True,
                        help="repeat in rounds over all servers (each started once per round), so "
                             "that a change in the machine's background load hits every row alike; "
                             "--no-interleave starts each server once and repeats back to back (yes)")
    parser.add_argument("--limit-batch-size", "--ceiling-batch-size", dest="limit_batch_size", type=int,
                        default=16, help="batch size of the in-process limit (16: what one worker's "
                                         "queue holds under the default 32 connections and 2 workers)")
    parser.add_argument("--limit-processes", type=int, default=0,
                        help="processes of the in-process limit, side by side, each with cores // "
                             "processes threads; 0 = the server's default layout, one per core "
                             f"(here {worker_layout(0, 0, cores).workers} x "
                             f"{worker_layout(0, 0, cores).threads} thread)")
    parser.add_argument("--wrk-threads", type=int, default=8, help="wrk -t (8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (32)")
    parser.add_argument("--wrk-timeout", default="30s",
                        help="wrk's per-request timeout (30s; wrk's own 2s would count slow answers "
                             "as errors and leave them out of the latencies)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds a server may take to start")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the outputs go (bench/results/runs)")
    parser.add_argument("--name", help="output file name without extension (<date>-<host>)")
    args = parser.parse_args(argv)
    args.workers = _list(args.workers)
    args.threads = _list(args.threads, ("auto",))
    args.http_threads = _list(args.http_threads, ("default",))
    args.workloads = _names(args.workloads)
    args.sweep_workloads = list(args.workloads) if args.sweep_workloads is None else _names(args.sweep_workloads)
    args.baseline_workloads = _names(args.baseline_workloads)
    args.backends = list(dict.fromkeys(b.strip() for b in args.backends.split(",") if b.strip()))
    for name in args.backends:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name!r}; expected some of {', '.join(BACKENDS)}")
    if not args.backends:
        parser.error(f"--backends needs at least one of {', '.join(BACKENDS)}")
    for name in args.workloads + args.sweep_workloads + args.baseline_workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; expected some of {', '.join(WORKLOADS)}")
    if not args.workloads or not set(args.sweep_workloads) <= set(args.workloads):
        parser.error("--workloads needs at least one workload; --sweep-workloads must be among them")
    if args.limit_processes < 0 or args.limit_batch_size < 1:
        parser.error("--limit-processes must be >= 0 (0 = default layout), --limit-batch-size >= 1")
    if any(t != "auto" and t < 1 for t in args.threads):
        parser.error("--threads takes 'auto' or counts >= 1")
    if not args.workers or any(w < 1 for w in args.workers) or args.repeat < 1 or args.duration <= 0:
        parser.error("--workers must be positive counts, --repeat >= 1 and --duration > 0")
    return args


def sweep(args, cores: int) -> list[Config]:
    """The embedder configurations, without duplicates once 'auto' and 'default' are resolved. The
    default is what `gunicorn -c gunicorn.conf.py wsgi:app` runs with no EMBEDDER_* set."""
    defaults = Settings()
    default_layout = worker_layout(defaults.workers, defaults.threads, cores)
    configs: dict[tuple, Config] = {}
    for backend in args.backends:
        for workers in args.workers:
            for threads in args.threads:
                for http in args.http_threads:
                    layout = worker_layout(workers, 0 if threads == "auto" else threads, cores)
                    http_threads = defaults.http_threads if http == "default" else http
                    config = Config(backend=backend, workers=workers, threads_setting=threads,
                                    threads=layout.threads, http_threads_setting=http,
                                    http_threads=http_threads,
                                    default=(backend == defaults.backend_label and layout == default_layout
                                             and http_threads == defaults.http_threads))
                    configs.setdefault(config.key, config)
    return list(configs.values())


def _command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)
        return (done.stdout or done.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(cores: int) -> Machine:
    """The machine, its software and the service's settings; never a secret (see Machine)."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = ""
    for line in _command_output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    versions = {}
    for package in ("torch", "onnxruntime", "openvino", "sentence-transformers", "transformers", "gunicorn", "flask",
                    "matplotlib"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    versions["wrk"] = next(iter(_command_output(["wrk", "-v"]).splitlines()), "")
    versions["caddy"] = _command_output(["caddy", "version"])
    versions["python"] = sys.version.split()[0]
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(_command_output(["git", "status", "--porcelain"]))
    return Machine(
        host=socket.gethostname(), cpu_model=cpu, nproc=os.cpu_count(), available_cpus=cores,
        kernel=os.uname().release,
        memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        versions=versions, git=commit + ("-dirty" if dirty else ""),
        embedder_env=Settings.from_env().environment(), loadavg_start=list(os.getloadavg()),
        cpu_flags=[flag for flag in NOTABLE_CPU_FLAGS if flag in (cpu_flags() or ())])


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


def settle(server, timeout: float = 60, idle_cores: float = 0.15) -> None:
    """Wait until the server has finished what an earlier wrk run left in flight (wrk stops
    without waiting for its last requests), so that a run does not start with a backlog."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for root in server.root_pids() for p in procstats.tree(root)]
        before, began = procstats.cpu_ticks(pids), time.monotonic()
        time.sleep(0.5)
        used = procstats.cpu_seconds_between(before, procstats.cpu_ticks(pids))
        if used / (time.monotonic() - began) < idle_cores:
            return


def measure(server, workload, bodies, args, wrk_options,
            runs_wanted: int) -> tuple[list[WrkRun], list[str], Memory | None]:
    """Warm up, then wrk runs, each with the server's CPU use and memory at its end; returns the
    completed runs, the errors of the others and the memory after the last."""
    if args.warmup > 0:
        settle(server)
        run_wrk(server.url, workload, bodies, args.warmup, wrk_options)
    runs, errors, memory = [], [], None
    for _ in range(runs_wanted):
        try:
            settle(server)
            pids = [p for root in server.root_pids() for p in procstats.tree(root)]
            cpu0, host0, began = procstats.cpu_ticks(pids), procstats.host_cpu(), time.monotonic()
            result = run_wrk(server.url, workload, bodies, args.duration, wrk_options)
            if result["requests"] == 0:
                raise RuntimeError(f"no request completed in {args.duration:g} s "
                                   f"(socket errors {result['socket_errors_detail']})")
            wall = time.monotonic() - began
            pids = [p for root in server.root_pids() for p in procstats.tree(root)]
            cpu1, host1 = procstats.cpu_ticks(pids), procstats.host_cpu()
            busy, total = host1[0] - host0[0], host1[1] - host0[1]
            memory = procstats.memory(pids)
            memory.root_pids = sorted(server.root_pids())
            runs.append(WrkRun(
                **result,
                server_cpu_cores=round(procstats.cpu_seconds_between(cpu0, cpu1) / wall, 2),
                host_cpu_busy_cores=round(busy / total * (os.cpu_count() or 1), 2) if total else 0.0,
                pss_mib=memory.pss_mib, private_mib=memory.private_mib, processes=memory.processes))
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            errors.append(_error(exc))
    return runs, errors, memory


class Target:
    """One server to measure: a baseline or one sweep configuration, with its result rows."""

    def __init__(self, server: str, config: Config | None, workloads: list[str]):
        self.server, self.config = server, config
        self.rows = {w: Row(server, w, config) for w in workloads}
        if config is None:
            self.label = f"baseline {server}"
        else:
            self.label = (f"embedder backend={config.backend} workers={config.workers} "
                          f"threads={config.threads} http_threads={config.http_threads}")

    def start(self, args):
        if self.server == "flask":
            return FlaskBaseline(args.start_timeout)
        if self.server == "caddy":
            return CaddyFanout(args.start_timeout)
        c = self.config
        return start_embedder(c.backend, c.workers, None if c.threads_setting == "auto" else c.threads,
                              None if c.http_threads_setting == "default" else c.http_threads,
                              args.start_timeout)

    def run(self, args, bodies, wrk_options, runs_wanted: int, save) -> None:
        """Start the server, measure every workload, stop it; failures become recorded errors."""
        log(f"{self.label}: starting")
        server = None
        try:
            server = self.start(args)
            if self.config is not None:  # what the server says it runs (start_embedder checks the backend)
                self.config.threads = server.info["threads_per_worker"]
                for row in self.rows.values():
                    row.served_backend = server.info["backend"]
        except Exception as exc:  # noqa: BLE001
            if server is not None:
                server.stop()
            for row in self.rows.values():
                row.add([], [f"server did not start: {_error(exc)}"[:4000]] * runs_wanted)
            log(f"{self.label}: FAILED to start: {str(exc).splitlines()[0][:300]}")
            return
        try:
            pids = [p for root in server.root_pids() for p in procstats.tree(root)]
            for name, row in self.rows.items():
                try:
                    runs, errors, memory = measure(server, WORKLOADS[name], bodies.get(name), args,
                                                   wrk_options, runs_wanted)
                except Exception as exc:  # noqa: BLE001 - e.g. the warm-up failed
                    runs, errors, memory = [], [_error(exc)] * runs_wanted, None
                row.add(runs, errors)
                row.memory_last_run = memory or row.memory_last_run
                row.server_pids = sorted(set(row.server_pids) | set(pids))
                if errors and hasattr(server, "log"):
                    row.server_log = server.log()[-3000:]
                log(f"{self.label} {name}: {_brief(runs, errors)}")
                save()
        finally:
            server.stop()


def plan(args, configs: list[Config]) -> list[Target]:
    """Baselines on their workloads, the default configuration on every workload, the others on
    --sweep-workloads (a configuration left with none is not run)."""
    targets = []
    if args.baselines:
        baseline_workloads = [w for w in args.baseline_workloads if w in args.workloads]
        if baseline_workloads:
            targets += [Target("flask", None, baseline_workloads), Target("caddy", None, baseline_workloads)]
        else:
            log("baselines skipped: none of --baseline-workloads is in --workloads")
    for config in configs:
        workloads = args.workloads if config.default else args.sweep_workloads
        if workloads:
            targets.append(Target("embedder", config, workloads))
    return targets


def limits_needed(targets: list[Target]) -> dict[str, list[str]]:
    """backend -> the sentence sets of the POST workloads its configurations run."""
    workloads: dict[str, set[str]] = {}
    for target in targets:
        if target.config is not None:
            workloads.setdefault(target.config.backend, set()).update(target.rows)
    needed = {backend: list(dict.fromkeys(w.sentence_set for name, w in WORKLOADS.items()
                                          if name in names and w.sentence_set))
              for backend, names in workloads.items()}
    return {backend: sets for backend, sets in needed.items() if sets}


def limit_layout(args, cores: int) -> tuple[int, int]:
    """(processes, threads each) of the in-process limit: --limit-processes, or the server's default."""
    processes = args.limit_processes or worker_layout(0, 0, cores).workers
    return processes, max(1, cores // processes)


def run_limit(args, limit: Limit, repeat: int) -> None:
    """One round of a backend's in-process sorted limit on one sentence set, in a child process so
    that it has its own threads and memory; its runs, or its error, are added to ``limit``."""
    log(f"in-process limit, {limit.backend} on {limit.sentence_set}: {limit.processes} processes x "
        f"{limit.threads} threads, sorted batches of {limit.batch_size}")
    argv = [sys.executable, "-m", "bench.tools.ceiling", "--backend", limit.backend,
            "--sentence-set", limit.sentence_set, "--processes", str(limit.processes),
            "--threads", str(limit.threads), "--seconds", str(args.duration), "--repeat", str(repeat),
            "--batch-size", str(limit.batch_size)]
    budget = args.start_timeout + repeat * (args.duration * 3 + 60)
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=budget,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr[-3000:]}")
        measured = Limit.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))
        limit.sentences, limit.tokens = measured.sentences, measured.tokens
        limit.add(measured.runs)
    except Exception as exc:  # noqa: BLE001 - recorded; the other rounds and backends go on
        limit.add(error=_error(exc))


def _brief(runs: list[WrkRun], errors: list[str]) -> str:
    if errors:
        return "FAILED: " + errors[0].splitlines()[0][:300]
    m = Median.of(runs)
    return (f"{m.requests_per_s:.1f} req/s, {m.sentences_per_s:.1f} sentences/s, "
            f"p99 {m.latency_p99_ms:.0f} ms, non-2xx {m.non_2xx_total}, "
            f"socket errors {m.socket_errors_total}, server CPU {m.server_cpu_cores:.2f} cores, "
            f"PSS {m.pss_mib:.0f} MiB")


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    cores = available_cpus()
    configs = sweep(args, cores)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{time.strftime('%Y-%m-%d')}-{re.sub(r'[^A-Za-z0-9_.-]', '_', socket.gethostname())}"
    paths = {ext: args.out_dir / f"{name}.{ext}" for ext in ("json", "md", "png")}
    results = Results(
        machine=machine_info(cores),
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        command="python -m bench.sweep " + " ".join(sys.argv[1:] if argv is None else argv),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        wrk=f"wrk -t {args.wrk_threads} -c {args.connections} -d {max(1, round(args.duration))}s "
            f"--latency --timeout {args.wrk_timeout}",
        workloads={n: WORKLOADS[n] for n in args.workloads})
    wrk_options = WrkOptions(args.wrk_threads, args.connections, args.wrk_timeout)
    log(f"{len(configs)} embedder configurations ({', '.join(args.backends)}; default backend "
        f"{Settings().backend_label}) x {len(args.workloads)} workloads, "
        f"{args.repeat} x {args.duration:g} s each; writing {paths['json']}")
    status = 0
    try:
        with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
            bodies = {n: write_bodies(WORKLOADS[n], workload_sentences(WORKLOADS[n]), Path(tmp))
                      for n in args.workloads}
            targets = plan(args, configs)
            needed = limits_needed(targets) if args.limit else {}
            processes, threads = limit_layout(args, cores)
            rounds, runs_per_start = (args.repeat, 1) if args.interleave else (1, args.repeat)

            def save() -> None:
                measured = [r for t in targets for r in t.rows.values() if r.runs or r.errors]
                results.baselines = [r for r in measured if r.config is None]
                results.rows = [r for r in measured if r.config is not None]
                results.save(paths["json"])

            save()
            for round_ in range(rounds):
                if rounds > 1:
                    log(f"round {round_ + 1} of {rounds}")
                # Alternate the order, so that a drift in the machine's load spreads over all rows.
                for target in (targets if round_ % 2 == 0 else targets[::-1]):
                    target.run(args, bodies, wrk_options, runs_per_start, save)
                pairs = [(b, s) for b, sets in needed.items() for s in sets]
                for backend, set_name in (pairs if round_ % 2 == 0 else pairs[::-1]):
                    limit = results.limits.setdefault(backend, {}).setdefault(set_name, Limit(
                        backend=backend, sentence_set=set_name, processes=processes, threads=threads,
                        batch_size=args.limit_batch_size,
                        sentences=len(SENTENCE_SETS[set_name]())))
                    run_limit(args, limit, runs_per_start)
                    log(f"in-process limit, {backend} on {set_name}: {limit.sentences_per_s} sentences/s"
                        + (f" ({len(limit.errors)} failed: {limit.errors[-1][:300]})" if limit.errors else ""))
                    results.save(paths["json"])
        results.complete = True
    except (KeyboardInterrupt, SystemExit) as exc:
        log(f"interrupted ({type(exc).__name__}); writing what was measured")
        results.interrupted = True
        status = 130
    finally:
        results.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results.machine.loadavg_end = list(os.getloadavg())
        try:
            results.summary = report.summarize(results)
        except Exception:  # noqa: BLE001 - the raw numbers are still worth writing
            results.summary = {"error": traceback.format_exc()}
        results.save(paths["json"])
        for ext, writer in (("md", report.write_markdown), ("png", report.write_plot)):
            try:
                writer(results, paths[ext])
            except Exception:  # noqa: BLE001
                log(f"could not write {paths[ext]}:\n{traceback.format_exc()}")
                status = status or 1
    rows = results.baselines + results.rows
    failed_rows = sum(r.median is None for r in rows)
    failed_runs = sum(len(r.errors) for r in rows)
    limit_errors = sum(len(limit.errors) for sets in results.limits.values() for limit in sets.values())
    if failed_rows or failed_runs or limit_errors:
        log(f"{failed_rows} row(s) failed, {failed_runs} run(s) failed, {limit_errors} in-process limit "
            f"run(s) failed; see 'errors' in {paths['json']}")
        status = status or 1
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return status


if __name__ == "__main__":
    sys.exit(main())
