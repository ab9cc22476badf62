# The shared part of every bench/results/compare/<date>-<change>/run.sh (sourced, not run): set
# `work` first (the scratch directory), then source this; it sets up `repo`, `python`, `out` and
# the environment, and defines `tree` and `sweep`.
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python).
#   OUT: where the before-<round>.{json,md} and after-<round>.{json,md} files go (default
#   $work/results; copy them next to the run.sh to replace its files).

set -euo pipefail
repo="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
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
