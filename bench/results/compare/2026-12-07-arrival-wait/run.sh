#!/usr/bin/env bash
# Issue 23 item 4: a free model waiting (at most a quarter of the pass that just ended) for the
# requests being tokenized in its worker, against no wait; default configuration otherwise. Two
# rounds of (no wait, wait), one sweep each: GET /, embed1, embed1long, 2 x 10 s of wrk per row.
# The setting (EMBEDDER_ARRIVAL_WAIT) existed at a046bd2 only: it was measured and removed.
#
# Usage: bench/results/compare/2026-12-07-arrival-wait/run.sh [TREE]
#   TREE: a commit (checked out as a detached worktree under $WORK) or a checkout; default a046bd2.
#   WORK: scratch directory (default /tmp/ab-arrival-wait); OUT, PYTHON: see bench/compare.sh.

work="${WORK:-/tmp/ab-arrival-wait}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

dir=$(tree both "${1:-a046bd2}")
args=(--duration 10 --repeat 2 --backends onnx --workers 2 --threads 1
      --workloads root,embed1,embed1long --no-baselines --no-limit)
for round in 1 2; do
  EMBEDDER_ARRIVAL_WAIT=0 sweep before "$round" "$dir" "${args[@]}"
  EMBEDDER_ARRIVAL_WAIT=0.25 sweep after "$round" "$dir" "${args[@]}"
done
echo "wrote $out"
