#!/usr/bin/env bash
# Issue 13's work (batching by length across the queue with a measured cost model, ONNX serving
# without torch with one shared weights file, the bench's new workloads), before and after, on one
# machine, default configuration, 2 wrk runs of 8 s per workload (--repeat 2), medians. Round 1:
# health, root, embed1, embed1long; round 2 (about half an hour later): embed32.
#
# Usage: bench/results/compare/2026-11-29-batching-by-length/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits, each checked out as a detached git worktree under $WORK; default
#   7f08c34 and 762fb52, the two compared here. Commits, not checkouts: BEFORE's bench/ is replaced
#   by AFTER's (the same bench code against both; BEFORE's own has neither the health and embed1long
#   workloads nor --no-limit), which is why the before files say "7f08c34-dirty".
#   WORK: scratch directory (default /tmp/ab-batching-by-length); OUT: where the before-<round>.{json,md}
#   and after-<round>.{json,md} files go (default $WORK/results; copy them here to replace these).
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python); see
#   bench/compare.sh.
# AFTER's bench code runs as python -m bench.sweep where it exists, bench.run before bench/ was split
# by role (the same arguments).

work="${WORK:-/tmp/ab-batching-by-length}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

for ref in "${1:-7f08c34}" "${2:-762fb52}"; do
  git -C "$repo" rev-parse --verify --quiet "$ref^{commit}" > /dev/null || { echo "not a commit: $ref" >&2; exit 2; }
done
before=$(tree before "${1:-7f08c34}")
after=$(tree after "${2:-762fb52}")
rm -rf "$before/bench" && cp -a "$after/bench" "$before/bench"  # the same bench code against both
common=(--duration 8 --repeat 2 --warmup 2 --backends onnx --workers 2 --threads auto --no-baselines --no-limit)
sweep before 1 "$before" "${common[@]}" --workloads health,root,embed1,embed1long
sweep after 1 "$after" "${common[@]}" --workloads health,root,embed1,embed1long
sweep before 2 "$before" "${common[@]}" --workloads embed32
sweep after 2 "$after" "${common[@]}" --workloads embed32
echo "wrote $out"
