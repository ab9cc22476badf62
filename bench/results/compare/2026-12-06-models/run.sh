#!/usr/bin/env bash
# Issue 21's changes (models by hub id, torch-free tokenizers proven against transformers, Dense and
# every tiny architecture on the onnx backend), before and after, for the default model: three
# interleaved rounds (before, after, before, after, ...) on one machine, default configuration, one
# 8 s wrk run per workload per round, GET / and embed1long (the issue's two).
#
# Usage: bench/results/compare/2026-12-06-models/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default 53f4fc8 (the end of issue 20) and this checkout.
#   WORK: scratch directory (default /tmp/ab-models); OUT, PYTHON: see bench/compare.sh.

work="${WORK:-/tmp/ab-models}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

before=$(tree before "${1:-53f4fc8}")
after=$(tree after "${2:-$repo}")
args=(--duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads root,embed1long --no-baselines --no-limit)
for round in 1 2 3; do
  sweep before "$round" "$before" "${args[@]}"
  sweep after "$round" "$after" "${args[@]}"
done
echo "wrote $out"
