"""Turn a benchmark's results (bench/schema.py) into a summary (ratios, best configuration,
backends compared, memory), a Markdown report and a PNG plot. Ratios compare rows of the same run
only: the machine is too noisy for comparisons across runs."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from .schema import Config, Results, Row

# Issue 4's bar for the default configuration on GET /, checked here, never in tests.
TARGET_VS_FLASK, TARGET_VS_CADDY, TARGET_P99_MS = 12.0, 6.0, 150.0
#: Plot colours: one per backend; baselines in colours none of them uses.
BACKEND_COLOURS = {"torch": "tab:blue", "onnx": "tab:orange", "onnx-int8": "tab:green"}
THREADS_NOTE = ("threads: intra-op threads per worker, torch's for torch, ONNX Runtime's for onnx and "
                "onnx-int8 (EMBEDDER_THREADS sets both)")


def ok(row: Row) -> bool:
    return row.median is not None


def clean(row: Row) -> bool:
    """Measured, and without a single non-2xx answer or socket error in any repetition."""
    return ok(row) and row.median.non_2xx_total == 0 and row.median.socket_errors_total == 0


def label(config: Config | None, server: str = "embedder") -> str:
    if config is None:
        return {"flask": "Flask (1 process)", "caddy": "Caddy + 2 Flask"}.get(server, server)
    text = (f"{config.backend}, {config.workers} worker{'s' if config.workers != 1 else ''} x "
            f"{config.threads} thread{'s' if config.threads != 1 else ''}")
    if config.http_threads_setting != "default":
        text += f", {config.http_threads} HTTP threads"
    return text + (" (default)" if config.default else "")


def ceilings(results: Results) -> dict[str, float]:
    """Each backend's measured in-process ceiling (sentences/s); failed ones left out."""
    return {backend: c.sentences_per_s for backend, c in results.ceiling.items() if c.sentences_per_s}


def backends_compared(rows: list[Row]) -> dict[str, list[dict]]:
    """Per workload, each backend's best clean row, its throughput as a ratio to the best torch row."""
    out: dict[str, list[dict]] = {}
    for workload in dict.fromkeys(r.workload for r in rows):
        best: dict[str, Row] = {}
        for row in rows:
            b = row.config.backend
            if row.workload == workload and clean(row) and (
                    b not in best or row.median.sentences_per_s > best[b].median.sentences_per_s):
                best[b] = row
        torch = best["torch"].median.sentences_per_s if "torch" in best else None
        out[workload] = [{"backend": b, "config": asdict(row.config), "label": label(row.config),
                          "sentences_per_s": row.median.sentences_per_s,
                          "latency_p99_ms": row.median.latency_p99_ms,
                          "vs_torch": round(row.median.sentences_per_s / torch, 2) if torch else None}
                         for b, row in best.items()]
    return out


def summarize(results: Results) -> dict:
    """The summary, plain JSON data; sets each measured row's ``ratios`` on the way."""
    base = {b.server: b.median for b in results.baselines if ok(b)}
    ceiling_rates = ceilings(results)
    rows = [r for r in results.rows if ok(r)]
    for row in rows:
        m, ratios = row.median, {}
        if row.workload == "root":
            for name in ("flask", "caddy"):
                if name in base and base[name].requests_per_s:
                    ratios["vs_" + name] = round(m.requests_per_s / base[name].requests_per_s, 2)
        elif row.config.backend in ceiling_rates:  # the ceiling of the row's own backend
            ratios["vs_ceiling"] = round(m.sentences_per_s / ceiling_rates[row.config.backend], 3)
        row.ratios = ratios

    summary: dict = {"best_by_workload": {}, "default_by_workload": {}, "memory": [], "targets": {}}
    by_workload: dict[str, list[Row]] = {}
    for row in rows:
        by_workload.setdefault(row.workload, []).append(row)
    top: dict[str, float] = {}
    for workload, candidates in by_workload.items():
        good = [r for r in candidates if clean(r)]
        if good:
            best = max(good, key=lambda r: r.median.sentences_per_s)
            if best.median.sentences_per_s > 0:
                top[workload] = best.median.sentences_per_s
            summary["best_by_workload"][workload] = {"config": asdict(best.config), "label": label(best.config),
                                                     **_essentials(best)}
        for row in candidates:
            if row.config.default:
                summary["default_by_workload"][workload] = {"config": asdict(row.config), **_essentials(row)}

    # Overall: the configuration with the best geometric mean of (throughput / the workload's best),
    # among those clean on every workload measured.
    configs: dict[tuple, list[Row]] = {}
    for row in rows:
        configs.setdefault(row.config.key, []).append(row)
    scored = []
    for entry in configs.values():
        mine = {r.workload: r for r in entry}
        if set(mine) >= set(top) and top and all(clean(mine[w]) for w in top):
            score = math.exp(sum(math.log(max(mine[w].median.sentences_per_s, 1e-9) / top[w])
                                 for w in top) / len(top))
            scored.append((score, entry[0].config))
    if scored:
        score, config = max(scored, key=lambda item: item[0])
        summary["best_overall"] = {"config": asdict(config), "label": label(config), "score": round(score, 3)}

    single = base["flask"].pss_mib if "flask" in base else None
    for entry in configs.values():
        config, mine = entry[0].config, {r.workload: r.median for r in entry}
        # Compare under the same load as the baseline's figure (GET /) when it was measured.
        same = "root" if "root" in mine else max(mine, key=lambda w: mine[w].pss_mib)
        peak = max(mine, key=lambda w: mine[w].pss_mib)
        item = {"config": asdict(config), "label": label(config), "workload": same,
                "pss_mib": mine[same].pss_mib, "private_mib": mine[same].private_mib,
                "pss_mib_peak": mine[peak].pss_mib, "peak_workload": peak}
        if single:
            item["separate_processes_mib"] = round(config.workers * single, 1)
            item["ratio_to_separate"] = round(item["pss_mib"] / item["separate_processes_mib"], 2)
        summary["memory"].append(item)
    summary["memory_definition"] = (
        "PSS: sum of Pss over the server's master and workers (/proc/<pid>/smaps_rollup) at the end "
        "of a wrk run, median over repetitions, under GET / (the baselines' workload; another "
        "workload only if GET / was not run); peak: the highest such median over all workloads "
        "(large batches need more activation memory). N separate processes: workers x the Pss of "
        "the single-process Flask baseline, which holds the same model, after its GET / runs in this "
        "run: what N independent one-model processes would take.")
    if "caddy" in base:
        summary["caddy_two_processes_pss_mib"] = base["caddy"].pss_mib
    summary["ceiling_sentences_per_s"] = ceiling_rates
    summary["backends"] = backends_compared(rows)

    m = summary["default_by_workload"].get("root")
    if m:
        t = summary["targets"]
        t["default_p99_ms"] = m["latency_p99_ms"]
        t["default_p99_under_150ms"] = m["latency_p99_ms"] < TARGET_P99_MS
        t["default_errors"] = m["non_2xx_total"] + m["socket_errors_total"]
        for name, bar in (("flask", TARGET_VS_FLASK), ("caddy", TARGET_VS_CADDY)):
            if name in base and base[name].requests_per_s:
                ratio = round(m["requests_per_s"] / base[name].requests_per_s, 2)
                t[f"default_vs_{name}"] = ratio
                t[f"default_vs_{name}_at_least_{bar:g}x"] = ratio >= bar
    return summary


def _essentials(row: Row) -> dict:
    keys = ("requests_per_s", "sentences_per_s", "latency_p50_ms", "latency_p99_ms", "non_2xx_total",
            "socket_errors_total", "server_cpu_cores", "pss_mib")
    return {**{k: getattr(row.median, k) for k in keys}, **row.ratios}


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(rows: list[Row], with_workload: bool) -> list[str]:
    head = (["workload"] if with_workload else []) + [
        "server", "req/s", "sentences/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "non-2xx",
        "socket err", "server CPU (cores)", "host CPU busy", "PSS MiB", "vs Flask", "vs Caddy", "vs ceiling"]
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
                      _fmt(m.server_cpu_cores, 2), _fmt(m.host_cpu_busy_cores, 2),
                      _fmt(m.pss_mib), _ratio(r.get("vs_flask")), _ratio(r.get("vs_caddy")),
                      _ratio(r.get("vs_ceiling"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}x"


def markdown(results: Results) -> str:
    machine, s, o = results.machine, results.summary, results.options
    versions = machine.versions
    out = [f"# embedder benchmark: {results.started[:10]}, {machine.host}", "",
           f"- Machine: {machine.cpu_model or 'unknown CPU'}, {machine.nproc} cores "
           f"({machine.available_cpus} available to the service), {machine.memory_gib} GiB; "
           f"load average at start {', '.join(f'{x:.2f}' for x in machine.loadavg_start)}",
           f"- Software: Python {versions.get('python')}, torch {versions.get('torch')}, "
           f"onnxruntime {versions.get('onnxruntime')}, "
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
           "- Server CPU: CPU time of the server's processes / wall time (cores busy); host CPU busy: "
           "the whole machine, load generator and anything else included.",
           f"- Configurations: backend, Gunicorn workers x {THREADS_NOTE}.", ""]
    if "error" in s:
        out += ["**The summary could not be computed:** " + s["error"].strip().splitlines()[-1], ""]
    if results.interrupted or not results.complete:
        out += ["**This run was interrupted: the tables are partial.**", ""]
    if results.baselines or s.get("default_by_workload", {}).get("root"):
        out += ["## GET / against the original setups", ""]
        shown = results.baselines + [r for r in results.rows if r.workload == "root"
                                     and (r.config.default or _is_best(r, s))]
        out += _table(shown, with_workload=False) + [""]
        t = s.get("targets") or {}
        if t:
            out += ["Default configuration on GET /: "
                    f"{_fmt(t.get('default_vs_flask'), 1)}x the Flask server (target 12x), "
                    f"{_fmt(t.get('default_vs_caddy'), 1)}x Caddy (target 6x), "
                    f"p99 {_fmt(t.get('default_p99_ms'), 1)} ms (target < 150 ms), "
                    f"{t.get('default_errors')} errors.", ""]
    if s.get("backends"):
        out += ["## Backends", "", "Each backend's best error-free configuration per workload; vs torch: its "
                "throughput / the best torch configuration's on the same workload, in this run.", "",
                "| workload | backend | best configuration | sentences/s | p99 ms | vs torch |",
                "|---|---|---|---|---|---|"]
        for workload, entries in s["backends"].items():
            for e in entries:
                out.append(f"| {workload} | {e['backend']} | {e['label']} | {e['sentences_per_s']:,.1f} | "
                           f"{e['latency_p99_ms']:,.1f} | {_ratio(e['vs_torch'], 2)} |")
        out.append("")
    out += ["## Sweep", ""] + _table(results.rows, with_workload=True) + [""]
    for backend, ceiling in results.ceiling.items():
        how = ("sentence-transformers `encode`" if backend == "torch" else
               f"embedder's tokenizing and {backend} forward pass (ONNX Runtime)")
        if ceiling.sentences_per_s is None:
            out.append(f"- In-process ceiling, {backend}: failed: {ceiling.errors[-1].splitlines()[-1][:200]}")
        else:
            failed = f"; {len(ceiling.errors)} round(s) failed" if ceiling.errors else ""
            out.append(f"- In-process ceiling, {backend}: **{ceiling.sentences_per_s:,.0f} sentences/s** "
                       f"({how} over the {ceiling.sentences} STS-B test sentences in batches of "
                       f"{ceiling.batch_size}, {ceiling.threads} threads, one process, no HTTP; median "
                       "of " + ", ".join(f"{x:,.0f}" for x in ceiling.runs) + failed + ")")
    if results.ceiling:
        out += ["", "vs ceiling compares each row with the ceiling of its own backend.", ""]
    if s.get("memory"):
        out += ["## Memory", "", "| configuration | PSS of the server MiB | private MiB | "
                "N separate processes MiB | server / separate | peak PSS MiB (workload) |",
                "|---|---|---|---|---|---|"]
        for item in s["memory"]:
            out.append(f"| {item['label']} | {item['pss_mib']:,.0f} ({item['workload']}) | "
                       f"{item['private_mib']:,.0f} | {_fmt(item.get('separate_processes_mib'))} | "
                       f"{_fmt(item.get('ratio_to_separate'), 2)} | "
                       f"{item['pss_mib_peak']:,.0f} ({item['peak_workload']}) |")
        out += ["", s["memory_definition"]]
        if s.get("caddy_two_processes_pss_mib"):
            out += [f"Measured for comparison: Caddy plus two Flask processes, "
                    f"{s['caddy_two_processes_pss_mib']:,.0f} MiB PSS."]
        out.append("")
    if s.get("best_by_workload"):
        out += ["## Best configuration", ""]
        for workload, best in s["best_by_workload"].items():
            out.append(f"- `{workload}`: {best['label']}: {best['sentences_per_s']:,.1f} sentences/s, "
                       f"p99 {best['latency_p99_ms']:,.1f} ms")
        if s.get("best_overall"):
            out.append(f"- Overall (best geometric mean of throughput relative to each workload's best, "
                       f"error-free everywhere): **{s['best_overall']['label']}**")
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
    ceiling as horizontal reference lines; bars span min-max over repetitions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results.workloads)
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.8 * len(workloads)), squeeze=False)
    base = {b.server: b.median for b in results.baselines if ok(b)}
    ceiling_rates = ceilings(results)
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
        for j, (metric, ylabel) in enumerate((("sentences_per_s", "sentences/s" if per_request > 1
                                               else "requests/s (= sentences/s)"),
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
            if workload == "root":
                for name, colour, style in (("flask", "tab:red", "--"), ("caddy", "tab:purple", ":")):
                    if name in base:
                        value = base[name].requests_per_s if j == 0 else base[name].latency_p99_ms
                        ax.axhline(value, color=colour, linestyle=style,
                                   label=f"{label(None, name)}: {value:,.0f}")
            elif j == 0:
                for backend, rate in ceiling_rates.items():
                    ax.axhline(rate, color=BACKEND_COLOURS.get(backend, "grey"), linestyle=(0, (1, 1)),
                               linewidth=1.2, alpha=0.8, label=f"{backend} in-process ceiling: {rate:,.0f}")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.06)  # room for the default's star at the top
            ax.set_xticks(ticks)
            ax.set_title(f"{workload}: {results.workloads[workload].description}", fontsize=9)
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
