#!/usr/bin/env bash
# The edge changes (8debcc8..160f7ca: 422 for inputs with no content, redacted access log, JSON
# answers for Gunicorn's own errors, HTTPS, metrics that survive a full or deleted directory, token
# id caps, the work of clients that left dropped), before and after: one round on one machine,
# default configuration, 2 wrk runs of 8 s per workload (--repeat 2), medians.
#
# Usage: bench/results/compare/2026-11-29-edge/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default 44e1f79 and 160f7ca, the two compared here.
#   WORK: scratch directory (default /tmp/ab-edge); OUT: where the before-<round>.{json,md} and
#   after-<round>.{json,md} files go (default $WORK/results; copy them here to replace these).
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python); see
#   bench/compare.sh.
# Each tree runs its own bench code: python -m bench.sweep where it exists, bench.run in trees from
# before bench/ was split by role (the same arguments).

work="${WORK:-/tmp/ab-edge}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

before=$(tree before "${1:-44e1f79}")
after=$(tree after "${2:-160f7ca}")
args=(--duration 8 --repeat 2 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads root,embed1,embed1long,embed32 --no-baselines --no-limit)
sweep before 1 "$before" "${args[@]}"
sweep after 1 "$after" "${args[@]}"
echo "wrote $out"
