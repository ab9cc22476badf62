#!/usr/bin/env bash
# Issue 20 (layered packages, module-level schemas, responses built from the models), before and
# after: three interleaved rounds (before, after, before, after, ...) on one machine,
# default configuration, one 8 s wrk run per workload per round.
#
# Usage: bench/results/compare/2026-12-06-layers/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default 9abc0dc (before issue 20) and this checkout.
#   WORK: scratch directory (default /tmp/ab-layers); OUT: where the before-<round>.{json,md} and
#   after-<round>.{json,md} files go (default $WORK/results; copy them here to replace these).
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python).
# Each tree runs its own bench code: python -m bench.sweep where it exists, bench.run in trees from
# before bench/ was split by role (the same arguments).

work="${WORK:-/tmp/ab-layers}"
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

before=$(tree before "${1:-9abc0dc}")
after=$(tree after "${2:-$repo}")
args=(--duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads health,root,embed1,embed1long --no-baselines --no-limit)
for round in 1 2 3; do
  sweep before "$round" "$before" "${args[@]}"
  sweep after "$round" "$after" "${args[@]}"
done
echo "wrote $out"
