"""Turn a benchmark's results (bench/sweep/schema.py) into a summary (ratios, best configuration,
backends compared, memory, the issue's targets), a Markdown report and a PNG plot. Ratios compare
rows of the same run only: the machine is too noisy for comparisons across runs."""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict
from pathlib import Path

from .schema import Config, Results, Row

# Issue 13's targets, checked here from each run's own numbers (never in tests): the default
# configuration against the single Flask server on GET / and on single mixed-length real sentences,
# against its backend's in-process sorted limit, and the memory of onnx servers.
TARGET_ROOT_VS_FLASK = 16.0
TARGET_ROOT_P99_MS = 100.0
#: Single real sentences: STS-B as it is (the issue's own row), and joined into a long tail.
TARGET_SINGLE_WORKLOADS = ("embed1", "embed1long")
TARGET_SINGLE_VS_FLASK = 7.0
TARGET_SINGLE_VS_LIMIT = 0.6
TARGET_MEMORY_BACKEND, TARGET_MEMORY_OTHER = "onnx", "torch"
TARGET_PSS_MANY_WORKERS, TARGET_PSS_MANY_OVER_ONE = 4, 1.2
#: Under which load a server's memory is compared, first measured wins: real mixed-length text
#: (its activations and arenas grow with the longest inputs), else GET /.
MEMORY_WORKLOADS = ("embed1long", "root")
#: Plot colours: one per backend; baselines in colours none of them uses.
BACKEND_COLOURS = {"torch": "tab:blue", "onnx": "tab:orange", "onnx-int8": "tab:green"}
THREADS_NOTE = ("threads: intra-op threads per worker, torch's for torch, ONNX Runtime's for onnx and "
                "onnx-int8 (EMBEDDER_THREADS sets both)")


def ok(row: Row) -> bool:
    return row.median is not None


def clean(row: Row) -> bool:
    """Measured, and without a single non-2xx answer or socket error in any repetition."""
    return ok(row) and row.median.non_2xx_total == 0 and row.median.socket_errors_total == 0


def errors(row: Row) -> int:
    return row.median.non_2xx_total + row.median.socket_errors_total


def cpu_ms_per_request(median) -> float | None:
    """Server CPU time per request in ms: server CPU cores / requests per second."""
    if not median.requests_per_s:
        return None
    return round(median.server_cpu_cores / median.requests_per_s * 1000, 2)


def label(config: Config | None, server: str = "embedder") -> str:
    if config is None:
        return {"flask": "Flask (1 process)", "caddy": "Caddy + 2 Flask"}.get(server, server)
    text = (f"{config.backend}, {config.workers} worker{'s' if config.workers != 1 else ''} x "
            f"{config.threads} thread{'s' if config.threads != 1 else ''}")
    if config.http_threads_setting != "default":
        text += f", {config.http_threads} HTTP threads"
    return text + (" (default)" if config.default else "")


def limit_rates(results: Results) -> dict[str, dict[str, float]]:
    """backend -> POST workload -> its in-process sorted limit (sentences/s, the limit of the
    workload's sentence set); failed ones left out."""
    out: dict[str, dict[str, float]] = {}
    for backend, sets in results.limits.items():
        for name, workload in results.workloads.items():
            limit = sets.get(workload.sentence_set) if workload.sentence_set else None
            if limit and limit.sentences_per_s:
                out.setdefault(backend, {})[name] = limit.sentences_per_s
    return out


def throughput(median) -> float:
    """Sentences/s, or requests/s for a workload that embeds nothing (GET /health)."""
    return median.sentences_per_s or median.requests_per_s


def backends_compared(rows: list[Row]) -> dict[str, list[dict]]:
    """Per workload, each backend's best clean row, its throughput as a ratio to the best torch row."""
    out: dict[str, list[dict]] = {}
    for workload in dict.fromkeys(r.workload for r in rows):
        best: dict[str, Row] = {}
        for row in rows:
            b = row.config.backend
            if row.workload == workload and clean(row) and (
                    b not in best or throughput(row.median) > throughput(best[b].median)):
                best[b] = row
        torch = throughput(best["torch"].median) if "torch" in best else None
        out[workload] = [{"backend": b, "config": asdict(row.config), "label": label(row.config),
                          "sentences_per_s": row.median.sentences_per_s,
                          "latency_p99_ms": row.median.latency_p99_ms,
                          "cpu_ms_per_request": cpu_ms_per_request(row.median),
                          "vs_limit": row.ratios.get("vs_limit"),
                          "requests_per_s": row.median.requests_per_s,
                          "vs_torch": round(throughput(row.median) / torch, 2) if torch else None}
                         for b, row in best.items()]
    return out


def _memory_item(config: Config, mine: dict[str, Row], flask: dict[str, Row]) -> dict:
    """One configuration's memory: under the first of MEMORY_WORKLOADS it ran (else its peak), the
    master's and the workers' shares from the last run, the peak over its workloads."""
    peak = max(mine, key=lambda w: mine[w].median.pss_mib)
    same = next((w for w in MEMORY_WORKLOADS if w in mine), peak)
    m = mine[same].median
    item = {"config": asdict(config), "label": label(config), "workload": same,
            "pss_mib": m.pss_mib, "private_mib": m.private_mib,
            "pss_mib_peak": mine[peak].median.pss_mib, "peak_workload": peak,
            "by_workload": {w: r.median.pss_mib for w, r in mine.items()}}
    last = mine[same].memory_last_run
    if last and last.root_pids:
        roots = {str(pid) for pid in last.root_pids}
        workers = [v for pid, v in last.pss_mib_by_pid.items() if pid not in roots]
        item["master_pss_mib"] = round(sum(v for pid, v in last.pss_mib_by_pid.items() if pid in roots), 1)
        if workers:
            item["worker_pss_mib_mean"] = round(sum(workers) / len(workers), 1)
    # N separate processes: N x the Flask baseline's PSS under the same load (else under GET /).
    base = flask.get(same) or flask.get("root")
    if base:
        item["separate_processes_mib"] = round(config.workers * base.median.pss_mib, 1)
        item["separate_processes_workload"] = base.workload
        item["ratio_to_separate"] = round(item["pss_mib"] / item["separate_processes_mib"], 2)
    return item


def _preferred(config: Config) -> tuple:
    """Among configurations of one backend and worker count: the default, then threads 'auto', then
    the default HTTP threads."""
    return (not config.default, config.threads_setting != "auto", config.http_threads_setting != "default")


def memory_by_workers(configs: dict[tuple, list[Row]]) -> dict[str, dict[str, dict]]:
    """backend -> workers (as text) -> the memory of the preferred configuration of that many
    workers (see _preferred), under each workload it ran (PSS MiB)."""
    chosen: dict[tuple, Config] = {}
    for entry in configs.values():
        c = entry[0].config
        key = (c.backend, c.workers)
        if key not in chosen or _preferred(c) < _preferred(chosen[key]):
            chosen[key] = c
    out: dict[str, dict[str, dict]] = {}
    for (backend, workers), config in sorted(chosen.items(), key=lambda kv: kv[0][1]):
        mine = {r.workload: r for r in configs[config.key] if ok(r)}
        if mine:
            out.setdefault(backend, {})[str(workers)] = _memory_item(config, mine, {})
    return out


def _pss_pair(matrix: dict, a: tuple[str, int], b: tuple[str, int]):
    """(PSS of a, PSS of b, the workload) under the first of MEMORY_WORKLOADS both ran (else any
    common one), or None."""
    cell_a = matrix.get(a[0], {}).get(str(a[1]))
    cell_b = matrix.get(b[0], {}).get(str(b[1]))
    if not cell_a or not cell_b:
        return None
    common = [w for w in cell_a["by_workload"] if w in cell_b["by_workload"]]
    if not common:
        return None
    workload = next((w for w in MEMORY_WORKLOADS if w in common), common[0])
    return cell_a["by_workload"][workload], cell_b["by_workload"][workload], workload


def _target(name: str, target: str, value, passed, measured: str) -> dict:
    return {"id": name, "target": target, "value": value, "pass": passed, "measured": measured}


def targets(results: Results, default: dict[str, Row], base: dict[str, dict[str, Row]],
            matrix: dict) -> list[dict]:
    """Issue 13's targets, each with its measured value and pass (True/False; None: not measured)."""
    out = []
    flask = base.get("flask", {})
    for workload, bar, extra in (("root", TARGET_ROOT_VS_FLASK, "p99"),
                                 *((w, TARGET_SINGLE_VS_FLASK, "limit") for w in TARGET_SINGLE_WORKLOADS)):
        title = "GET /" if workload == "root" else f"`{workload}` (single mixed-length sentences)"
        row, flask_row = default.get(workload), flask.get(workload)
        if row and flask_row and flask_row.median.requests_per_s:
            ratio = round(row.median.sentences_per_s / flask_row.median.sentences_per_s, 2)
            out.append(_target(f"{workload}_vs_flask", f"{title}: default ≥ {bar:g}x the single Flask server",
                               ratio, ratio >= bar,
                               f"{ratio:.2f}x ({row.median.sentences_per_s:,.1f} vs "
                               f"{flask_row.median.sentences_per_s:,.1f} sentences/s)"))
        else:
            why = "default configuration" if not row else "Flask baseline"
            out.append(_target(f"{workload}_vs_flask", f"{title}: default ≥ {bar:g}x the single Flask server",
                               None, None, f"not measured ({why} on `{workload}` missing or failed)"))
        if extra == "p99":
            p99 = row.median.latency_p99_ms if row else None
            out.append(_target("root_p99_ms", f"{title}: default p99 ≤ {TARGET_ROOT_P99_MS:g} ms", p99,
                               None if p99 is None else p99 <= TARGET_ROOT_P99_MS,
                               "not measured" if p99 is None else f"{p99:,.1f} ms"))
        count = errors(row) if row else None
        out.append(_target(f"{workload}_errors", f"{title}: default, zero errors (non-2xx + socket, "
                           "all repetitions)", count, None if count is None else count == 0,
                           "not measured" if count is None else str(count)))
        if extra == "limit":
            ratio = row.ratios.get("vs_limit") if row else None
            backend = row.config.backend if row else "its backend"
            limit = (limit_rates(results).get(backend, {}).get(workload) if row else None)
            out.append(_target(f"{workload}_vs_limit", f"{title}: default ≥ {TARGET_SINGLE_VS_LIMIT:g} of "
                               "the in-process sorted limit", ratio,
                               None if ratio is None else ratio >= TARGET_SINGLE_VS_LIMIT,
                               "not measured" if ratio is None else
                               f"{ratio:.2f} ({row.median.sentences_per_s:,.1f} vs {limit:,.1f} "
                               f"sentences/s, {backend})"))
    b, other, many = TARGET_MEMORY_BACKEND, TARGET_MEMORY_OTHER, TARGET_PSS_MANY_WORKERS
    pair = _pss_pair(matrix, (b, many), (b, 1))
    ratio = round(pair[0] / pair[1], 2) if pair and pair[1] else None
    out.append(_target("pss_many_over_one", f"Memory: total PSS of {many} {b} workers ≤ "
                       f"{TARGET_PSS_MANY_OVER_ONE:g}x that of 1 worker", ratio,
                       None if ratio is None else ratio <= TARGET_PSS_MANY_OVER_ONE,
                       f"not measured (needs {b} at 1 and {many} workers on a common workload)"
                       if ratio is None else
                       f"{ratio:.2f}x ({pair[0]:,.0f} vs {pair[1]:,.0f} MiB, `{pair[2]}`)"))
    pair = _pss_pair(matrix, (b, 1), (other, 1))
    ratio = round(pair[0] / pair[1], 2) if pair and pair[1] else None
    out.append(_target("pss_one_vs_other", f"Memory: 1-worker {b} server ≤ 1-worker {other} server (PSS)",
                       ratio, None if ratio is None else ratio <= 1.0,
                       f"not measured (needs 1-worker {b} and {other} servers on a common workload)"
                       if ratio is None else
                       f"{pair[0]:,.0f} vs {pair[1]:,.0f} MiB ({ratio:.2f}x, `{pair[2]}`)"))
    return out


def summarize(results: Results) -> dict:
    """The summary, plain JSON data; sets each measured row's ``ratios`` on the way."""
    base: dict[str, dict[str, Row]] = {}
    for b in results.baselines:
        if ok(b):
            base.setdefault(b.server, {})[b.workload] = b
    limits = limit_rates(results)
    rows = [r for r in results.rows if ok(r)]
    for row in rows:
        m, ratios = row.median, {}
        for name in ("flask", "caddy"):
            other = base.get(name, {}).get(row.workload)
            if other and other.median.sentences_per_s:
                ratios["vs_" + name] = round(m.sentences_per_s / other.median.sentences_per_s, 2)
        limit = limits.get(row.config.backend, {}).get(row.workload)  # its own backend's and workload's
        if limit:
            ratios["vs_limit"] = round(m.sentences_per_s / limit, 3)
        row.ratios = ratios

    summary: dict = {"best_by_workload": {}, "default_by_workload": {}, "memory": [], "targets": []}
    by_workload: dict[str, list[Row]] = {}
    for row in rows:
        by_workload.setdefault(row.workload, []).append(row)
    default: dict[str, Row] = {}
    for workload, candidates in by_workload.items():
        good = [r for r in candidates if clean(r)]
        if good:
            best = max(good, key=lambda r: throughput(r.median))
            summary["best_by_workload"][workload] = {"config": asdict(best.config), "label": label(best.config),
                                                     **_essentials(best)}
        for row in candidates:
            if row.config.default:
                default[workload] = row
                summary["default_by_workload"][workload] = {"config": asdict(row.config), **_essentials(row)}

    configs: dict[tuple, list[Row]] = {}
    for row in rows:
        configs.setdefault(row.config.key, []).append(row)
    # Overall: the configuration with the best geometric mean of (throughput / the workload's best),
    # over the workloads every configuration ran, among those clean on all of them.
    shared = set(by_workload)
    for entry in configs.values():
        shared &= {r.workload for r in entry}
    top = {w: summary["best_by_workload"][w]["sentences_per_s"] for w in shared
           if w in summary["best_by_workload"] and summary["best_by_workload"][w]["sentences_per_s"] > 0}
    scored = []
    for entry in configs.values():
        mine = {r.workload: r for r in entry}
        if top and all(clean(mine[w]) for w in top):
            score = math.exp(sum(math.log(max(mine[w].median.sentences_per_s, 1e-9) / top[w])
                                 for w in top) / len(top))
            scored.append((score, entry[0].config))
    if scored:
        score, config = max(scored, key=lambda item: item[0])
        summary["best_overall"] = {"config": asdict(config), "label": label(config), "score": round(score, 3),
                                   "workloads": sorted(top)}

    for entry in configs.values():
        summary["memory"].append(_memory_item(entry[0].config, {r.workload: r for r in entry},
                                              base.get("flask", {})))
    matrix = memory_by_workers(configs)
    summary["memory_by_workers"] = matrix
    summary["memory_definition"] = (
        "PSS: sum of Pss over the server's master and workers (/proc/<pid>/smaps_rollup) at the end "
        "of a wrk run (under load), median over repetitions, under the first of "
        + ", ".join(f"`{w}`" for w in MEMORY_WORKLOADS) + " the configuration ran (else its highest); "
        "master and worker: each process's share in the last such run; peak: the highest median "
        "over all its workloads (large batches need more activation memory). N separate processes: "
        "workers x the Pss of the single-process Flask baseline, which holds the same model, under "
        "the same workload (else GET /) in this run: what N independent one-model processes would take.")
    if "caddy" in base:
        summary["caddy_two_processes_pss_mib"] = {w: r.median.pss_mib for w, r in base["caddy"].items()}
    summary["limits"] = limits
    summary["backends"] = backends_compared(rows)
    summary["targets"] = targets(results, default, base, matrix)
    return summary


def _essentials(row: Row) -> dict:
    keys = ("requests_per_s", "sentences_per_s", "latency_p50_ms", "latency_p99_ms", "non_2xx_total",
            "socket_errors_total", "server_cpu_cores", "pss_mib")
    return {**{k: getattr(row.median, k) for k in keys},
            "cpu_ms_per_request": cpu_ms_per_request(row.median), **row.ratios}


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(rows: list[Row], with_workload: bool) -> list[str]:
    head = (["workload"] if with_workload else []) + [
        "server", "req/s", "sentences/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "non-2xx",
        "socket err", "server CPU (cores)", "CPU ms/req", "host CPU busy", "PSS MiB", "vs Flask", "vs Caddy",
        "vs limit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.workload] if with_workload else []
        name = label(row.config, row.server)
        if not ok(row):
            cells += [name, "failed: " + row.error.splitlines()[0][:120].replace("|", "/")]
            cells += [""] * (len(head) - len(cells))
        else:
            m, r = row.median, row.ratios
            if row.errors:
                name += f" ({len(row.errors)} of {len(row.runs) + len(row.errors)} runs failed)"
            cells += [name, _fmt(m.requests_per_s, 1), _fmt(m.sentences_per_s, 1),
                      _fmt(m.latency_mean_ms, 1), _fmt(m.latency_p50_ms, 1),
                      _fmt(m.latency_p90_ms, 1), _fmt(m.latency_p99_ms, 1),
                      str(m.non_2xx_total), str(m.socket_errors_total),
                      _fmt(m.server_cpu_cores, 2), _fmt(cpu_ms_per_request(m), 1),
                      _fmt(m.host_cpu_busy_cores, 2), _fmt(m.pss_mib), _ratio(r.get("vs_flask")),
                      _ratio(r.get("vs_caddy")), _fmt(r.get("vs_limit"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}x"


def _verdict(passed) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "not measured"}[passed]


def _targets_section(s: dict) -> list[str]:
    out = ["## Targets", "", "Issue 13's targets, from this run's own numbers (medians over repetitions; "
           "errors are totals).", "", "| target | measured | result |", "|---|---|---|"]
    for t in s["targets"]:
        out.append(f"| {t['target']} | {t['measured']} | {_verdict(t['pass'])} |")
    return out + [""]


def _limits_section(results: Results) -> list[str]:
    out = ["## In-process sorted limit", "",
           "What each backend does with no HTTP on each workload's own inputs when batches hold inputs "
           "of similar length: the set sorted by token count into batches, embedder's tokenizing and "
           "forward pass (bench/tools/ceiling.py), in processes side by side like the server's workers. "
           "`vs limit` in the tables is a row's sentences/s over its own backend's limit on its "
           "workload.", "",
           "| backend | sentence set (workloads) | inputs | tokens min / median / p90 / p99 / max | "
           "processes x threads | batch | sentences/s | runs |", "|---|---|---|---|---|---|---|---|"]
    for backend, sets in results.limits.items():
        for name, limit in sets.items():
            users = ", ".join(f"`{w}`" for w, x in results.workloads.items() if x.sentence_set == name)
            t = limit.tokens
            tokens = " / ".join(_fmt(t.get(k)) for k in ("min", "median", "p90", "p99", "max")) if t else "n/a"
            if limit.sentences_per_s is None:
                rate = "failed: " + (limit.errors[-1].splitlines()[-1][:150].replace("|", "/")
                                     if limit.errors else "not measured")
            else:
                rate = f"**{limit.sentences_per_s:,.1f}**" + (
                    f" ({len(limit.errors)} round(s) failed)" if limit.errors else "")
            out.append(f"| {backend} | {name} ({users}) | {limit.sentences:,} | {tokens} | "
                       f"{limit.processes} x {limit.threads} | {limit.batch_size} | {rate} | "
                       + ", ".join(f"{x:,.0f}" for x in limit.runs) + " |")
    return out + [""]


def _memory_section(s: dict) -> list[str]:
    out = ["## Memory", ""]
    matrix = s.get("memory_by_workers") or {}
    counts = sorted({int(w) for cells in matrix.values() for w in cells})
    if matrix:
        out += ["Total PSS of the server (master + workers) by worker count, MiB, under load; in "
                "brackets the master's share and each worker's mean share, and the workload.", "",
                "| backend | " + " | ".join(f"{w} worker{'s' if w != 1 else ''}" for w in counts) + " |",
                "|---|" + "---|" * len(counts)]
        for backend, cells in matrix.items():
            row = []
            for w in counts:
                c = cells.get(str(w))
                if not c:
                    row.append("")
                    continue
                parts = [f"master {c['master_pss_mib']:,.0f}"] if "master_pss_mib" in c else []
                if "worker_pss_mib_mean" in c:
                    parts.append(f"worker {c['worker_pss_mib_mean']:,.0f}")
                parts.append(f"`{c['workload']}`")
                row.append(f"**{c['pss_mib']:,.0f}** ({', '.join(parts)})")
            out.append(f"| {backend} | " + " | ".join(row) + " |")
        out.append("")
        for t in s.get("targets", []):
            if t["id"].startswith("pss_"):
                out.append(f"- {t['target']}: " + (t["measured"] if t["pass"] is None
                                                   else f"{t['measured']}: {_verdict(t['pass'])}"))
        out.append("")
    if s.get("memory"):
        out += ["Every configuration:", "", "| configuration | PSS of the server MiB | private MiB | "
                "N separate processes MiB | server / separate | peak PSS MiB (workload) |",
                "|---|---|---|---|---|---|"]
        for item in s["memory"]:
            out.append(f"| {item['label']} | {item['pss_mib']:,.0f} ({item['workload']}) | "
                       f"{item['private_mib']:,.0f} | {_fmt(item.get('separate_processes_mib'))} | "
                       f"{_fmt(item.get('ratio_to_separate'), 2)} | "
                       f"{item['pss_mib_peak']:,.0f} ({item['peak_workload']}) |")
        out += ["", s["memory_definition"]]
        for workload, pss in (s.get("caddy_two_processes_pss_mib") or {}).items():
            out.append(f"Measured for comparison: Caddy plus two Flask processes, {pss:,.0f} MiB PSS "
                       f"(`{workload}`).")
        out.append("")
    return out


def markdown(results: Results) -> str:
    machine, s, o = results.machine, results.summary, results.options
    versions = machine.versions
    out = [f"# embedder benchmark: {results.started[:10]}, {machine.host}", "",
           f"- Machine: {machine.cpu_model or 'unknown CPU'}, {machine.nproc} cores "
           f"({machine.available_cpus} available to the service), {machine.memory_gib} GiB; "
           f"CPU flags {' '.join(machine.cpu_flags) or 'not recorded'}; "
           f"load average at start {', '.join(f'{x:.2f}' for x in machine.loadavg_start)}",
           f"- Software: Python {versions.get('python')}, torch {versions.get('torch')}, "
           f"onnxruntime {versions.get('onnxruntime')}, openvino {versions.get('openvino')}, "
           f"sentence-transformers {versions.get('sentence-transformers')}, "
           f"gunicorn {versions.get('gunicorn')}; embedder {machine.git}"
           + (f"; settings {', '.join(f'{k}={v}' for k, v in machine.embedder_env.items())}"
              if machine.embedder_env else ""),
           f"- Command: `{results.command.strip()}`",
           f"- Load: `{results.wrk}`, {o['warmup']:g} s warm-up, then {o['repeat']} repetitions "
           + ("in rounds over all servers (a fresh start each round)" if o.get("interleave")
              else "back to back") + "; medians shown (errors are totals over repetitions). "
           "Only one server runs at a time.",
           "- Workloads: " + "; ".join(f"`{n}` = {w.description}" for n, w in results.workloads.items()),
           "- Server CPU: CPU time of the server's processes / wall time (cores busy); CPU ms/req: "
           "server CPU time per request (server CPU / req/s); host CPU busy: the whole machine, load "
           "generator and anything else included.",
           f"- Configurations: backend, Gunicorn workers x {THREADS_NOTE}.", ""]
    if "error" in s:
        out += ["**The summary could not be computed:** " + s["error"].strip().splitlines()[-1], ""]
    if results.interrupted or not results.complete:
        out += ["**This run was interrupted: the tables are partial.**", ""]
    if s.get("targets"):
        out += _targets_section(s)
    baseline_workloads = list(dict.fromkeys(b.workload for b in results.baselines))
    for workload in baseline_workloads + (["root"] if "root" not in baseline_workloads
                                          and s.get("default_by_workload", {}).get("root") else []):
        title = "GET /" if workload == "root" else f"`{workload}`"
        out += [f"## {title} against the original setups", ""]
        shown = [b for b in results.baselines if b.workload == workload] + [
            r for r in results.rows if r.workload == workload and (r.config.default or _is_best(r, s))]
        out += _table(shown, with_workload=False) + [""]
    if s.get("backends"):
        out += ["## Backends", "", "Each backend's best error-free configuration per workload; vs torch: its "
                "throughput / the best torch configuration's on the same workload, in this run; vs limit: "
                "/ its own in-process sorted limit on that workload.", "",
                "| workload | backend | best configuration | sentences/s | p99 ms | CPU ms/req | vs limit | "
                "vs torch |", "|---|---|---|---|---|---|---|---|"]
        for workload, entries in s["backends"].items():
            for e in entries:
                out.append(f"| {workload} | {e['backend']} | {e['label']} | {e['sentences_per_s']:,.1f} | "
                           f"{e['latency_p99_ms']:,.1f} | {_fmt(e.get('cpu_ms_per_request'), 1)} | "
                           f"{_fmt(e.get('vs_limit'), 2)} | {_ratio(e['vs_torch'], 2)} |")
        out.append("")
    if results.limits:
        out += _limits_section(results)
    out += ["## Sweep", ""] + _table(results.rows, with_workload=True) + [""]
    out += _memory_section(s)
    if s.get("best_by_workload"):
        out += ["## Best configuration", ""]
        for workload, best in s["best_by_workload"].items():
            out.append(f"- `{workload}`: {best['label']}: {best['sentences_per_s']:,.1f} sentences/s, "
                       f"p99 {best['latency_p99_ms']:,.1f} ms")
        if s.get("best_overall"):
            out.append(f"- Overall (best geometric mean of throughput relative to each workload's best, "
                       f"over {', '.join(f'`{w}`' for w in s['best_overall']['workloads'])}, error-free "
                       f"everywhere): **{s['best_overall']['label']}**")
        out.append("")
    return "\n".join(out)


def _is_best(row: Row, summary: dict) -> bool:
    best = summary.get("best_by_workload", {}).get(row.workload)
    return bool(best) and best["config"] == asdict(row.config)


def write_markdown(results: Results, path: Path) -> None:
    path.write_text(markdown(results) + "\n")


def write_plot(results: Results, path: Path) -> None:
    """Throughput and p99 latency against worker count, one panel pair per workload; one line per
    backend (colour) and threads setting (line style); baselines and each backend's in-process
    in-process sorted limit as horizontal reference lines; bars span min-max over repetitions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results.workloads)
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.8 * len(workloads)), squeeze=False)
    base = {(b.server, b.workload): b.median for b in results.baselines if ok(b)}
    limits = limit_rates(results)
    ticks = sorted({r.config.workers for r in results.rows}) or [1]
    settings = list(dict.fromkeys(str(r.config.threads_setting) for r in results.rows))
    # Threads setting: line style and marker (a series of one point shows no line); HTTP threads
    # other than the default: hollow markers.
    styles = dict(zip(settings, [("-", "o"), ("--", "s"), ("-.", "^"), (":", "D")] * len(settings)))
    series_legend: dict = {}
    for i, workload in enumerate(workloads):
        rows = [r for r in results.rows if r.workload == workload and ok(r)]
        series: dict[str, list[Row]] = {}
        for row in rows:
            c = row.config
            name = c.backend + (", threads auto" if c.threads_setting == "auto"
                                else f", {c.threads_setting} thread" + ("s" if c.threads_setting != 1 else ""))
            if c.http_threads_setting != "default":
                name += f", {c.http_threads} HTTP threads"
            series.setdefault(name, []).append(row)
        per_request = results.workloads[workload].sentences_per_request
        rate, rate_label = (("sentences_per_s", "sentences/s") if per_request > 1 else
                            ("requests_per_s", "requests/s (= sentences/s)") if per_request == 1 else
                            ("requests_per_s", "requests/s"))  # no model: e.g. GET /health
        for j, (metric, ylabel) in enumerate(((rate, rate_label),
                                              ("latency_p99_ms", "p99 latency (ms)"))):
            ax = axes[i][j]
            for name, points in series.items():
                points.sort(key=lambda r: r.config.workers)
                c = points[0].config
                xs = [r.config.workers for r in points]
                ys = [getattr(r.median, metric) for r in points]
                runs = [[getattr(x, metric) for x in r.runs] for r in points]
                err = [[y - min(v) for y, v in zip(ys, runs)], [max(v) - y for y, v in zip(ys, runs)]]
                linestyle, marker = styles[str(c.threads_setting)]
                colour = BACKEND_COLOURS.get(c.backend)
                ax.errorbar(xs, ys, yerr=err, marker=marker, markersize=4, capsize=3, label=name, color=colour,
                            linestyle=linestyle,
                            markerfacecolor="none" if c.http_threads_setting != "default" else colour)
                for r, x, y in zip(points, xs, ys):
                    if r.config.default:
                        # Behind the point, so the backend's colour still shows at its centre.
                        ax.plot([x], [y], marker="*", markersize=14, color="gold", markeredgecolor="black",
                                linestyle="none", zorder=1, label="default configuration")
            for name, colour, style in (("flask", "tab:red", "--"), ("caddy", "tab:purple", ":")):
                if (name, workload) in base:
                    median = base[(name, workload)]
                    value = getattr(median, rate) if j == 0 else median.latency_p99_ms
                    ax.axhline(value, color=colour, linestyle=style, label=f"{label(None, name)}: {value:,.0f}")
            if j == 0:
                for backend, rates in limits.items():
                    if workload in rates:
                        ax.axhline(rates[workload], color=BACKEND_COLOURS.get(backend, "grey"),
                                   linestyle=(0, (1, 1)), linewidth=1.2, alpha=0.8,
                                   label=f"{backend} in-process sorted limit: {rates[workload]:,.0f}")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.06)  # room for the default's star at the top
            ax.set_xticks(ticks)
            ax.set_title(textwrap.fill(f"{workload}: {results.workloads[workload].description}", 80),
                         fontsize=8)
            ax.set_xlabel("Gunicorn workers")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            # Series (the same in every panel) go in one legend below; each panel keeps its own
            # reference lines, whose values differ from panel to panel.
            refs = {}
            for handle, text in zip(*ax.get_legend_handles_labels()):
                (series_legend if text in series or text == "default configuration" else refs)[text] = handle
            if refs:
                ax.legend(refs.values(), refs.keys(), fontsize=6, framealpha=0.7)
    machine = results.machine
    fig.suptitle(f"embedder, {results.started[:10]}: {machine.cpu_model}, {machine.nproc} cores; "
                 f"{results.wrk}\n{THREADS_NOTE}", fontsize=9)
    bottom = 0.0
    if series_legend:
        if "default configuration" in series_legend:  # after the series
            series_legend["default configuration"] = series_legend.pop("default configuration")
        ncol = min(4, len(series_legend))
        lines = -(-len(series_legend) // ncol)
        bottom = (0.25 + 0.2 * lines) / fig.get_figheight()
        fig.legend(series_legend.values(), series_legend.keys(), loc="lower center", ncol=ncol, fontsize=7,
                   frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
