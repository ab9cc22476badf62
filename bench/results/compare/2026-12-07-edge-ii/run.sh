#!/usr/bin/env bash
# Issues 23-24 (admission by characters before tokenizing, chunked tokenizing, /tokenize caps,
# bounded sends, gapless reload, the arrivals count), before and after, default configuration:
# four interleaved rounds (before, after, ...) on one machine, one 8 s wrk run per workload per
# round, GET / and embed1long (issue 24's two).
#
# Usage: bench/results/compare/2026-12-07-edge-ii/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default f74a4ea (the end of issue 22) and this checkout.
#   WORK: scratch directory (default /tmp/ab-edge-ii); OUT, PYTHON: see bench/compare.sh.

work="${WORK:-/tmp/ab-edge-ii}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

before=$(tree before "${1:-f74a4ea}")
after=$(tree after "${2:-$repo}")
args=(--duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads root,embed1long --no-baselines --no-limit)
for round in 1 2 3 4; do
  sweep before "$round" "$before" "${args[@]}"
  sweep after "$round" "$after" "${args[@]}"
done
echo "wrote $out"
