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
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python).
# AFTER's bench code runs as python -m bench.sweep where it exists, bench.run before bench/ was split
# by role (the same arguments).

work="${WORK:-/tmp/ab-batching-by-length}"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"
python="${PYTHON:-$repo/.venv/bin/python}"
out="${OUT:-$work/results}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$work" "$out"

tree() {  # tree SIDE REF: REF itself if it is a directory, else a detached git worktree of it
  if [ -d "$2" ]; then (cd "$2" && pwd); return; fi
  [ -d "$work/$1" ] || git -C "$repo" worktree add --detach "$work/$1" "$2" >&2
  echo "$work/$1"
}

sweep() {  # sweep SIDE ROUND TREE ARGS...: one sweep in TREE, kept as SIDE-ROUND.{json,md}
  local side=$1 round=$2 dir=$3 module=bench.run
  shift 3
  [ -f "$dir/bench/sweep/__main__.py" ] && module=bench.sweep  # bench.run before bench/ had roles
  echo "round $round, $side: $dir ($(git -C "$dir" describe --always --dirty 2>/dev/null || true))"
  (cd "$dir" && "$python" -m "$module" "$@" --out-dir "$work/out" --name "$side-$round") \
    > "$work/$side-$round.log" 2>&1 || echo "  exit status $?: see $work/$side-$round.log"
  cp "$work/out/$side-$round.json" "$work/out/$side-$round.md" "$out/"
}

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
