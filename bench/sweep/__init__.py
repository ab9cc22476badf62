"""The wrk sweep and its report: ``python -m bench.sweep`` (run.py) measures the Flask and Caddy
baselines and a sweep of embedder configurations on the workloads of workloads.py, and writes
bench/results/runs/<date>-<host>.{json,md,png} (schema.py's Results, report.py's summary)."""
