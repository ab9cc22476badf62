#!/usr/bin/env bash
# Issue 22 (several models in one server, one scheduler per worker across models, rerankers), before
# and after, for the default model alone: three interleaved rounds (before, after, before, after,
# ...) on one machine, default configuration, one 8 s wrk run per workload per round, GET / and
# embed1long (the issue's two).
#
# Usage: bench/results/compare/2026-12-06-several-models/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default e299edf (the end of issue 21) and this checkout.
#   WORK: scratch directory (default /tmp/ab-several-models); OUT, PYTHON: see bench/compare.sh.

work="${WORK:-/tmp/ab-several-models}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

before=$(tree before "${1:-e299edf}")
after=$(tree after "${2:-$repo}")
args=(--duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads root,embed1long --no-baselines --no-limit)
for round in 1 2 3; do  # run twice here: the second run's rounds renamed 4, 5, 6
  sweep before "$round" "$before" "${args[@]}"
  sweep after "$round" "$after" "${args[@]}"
done
echo "wrote $out"
