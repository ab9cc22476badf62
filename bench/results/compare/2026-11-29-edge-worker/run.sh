#!/usr/bin/env bash
# The edge worker (issue 14) against Gunicorn's gthread worker, before and after: three interleaved
# rounds (before, after, before, after, ...) on one machine, default configuration, one 8 s wrk
# run per workload per round.
#
# Usage: bench/results/compare/2026-11-29-edge-worker/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default 157080a and ddcd5cb, the two compared here.
#   WORK: scratch directory (default /tmp/ab-edge-worker); OUT: where the before-<round>.{json,md} and
#   after-<round>.{json,md} files go (default $WORK/results; copy them here to replace these).
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python); see
#   bench/compare.sh.
# Each tree runs its own bench code: python -m bench.sweep where it exists, bench.run in trees from
# before bench/ was split by role (the same arguments).

work="${WORK:-/tmp/ab-edge-worker}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

before=$(tree before "${1:-157080a}")
after=$(tree after "${2:-ddcd5cb}")
args=(--duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads health,root,embed1,embed1long --no-baselines --no-limit)
for round in 1 2 3; do
  sweep before "$round" "$before" "${args[@]}"
  sweep after "$round" "$after" "${args[@]}"
done
echo "wrote $out"
