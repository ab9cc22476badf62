#!/usr/bin/env bash
# Issue 15's changes (TEI's and OpenAI's routes, validation by pydantic models, Swagger UI at /docs),
# before and after: three interleaved rounds (before, after, before, after, ...) on one machine,
# default configuration, one 8 s wrk run per workload per round.
#
# Usage: bench/results/compare/2026-11-29-clients/run.sh [BEFORE [AFTER]]
#   BEFORE, AFTER: commits (each checked out as a detached git worktree under $WORK) or existing
#   checkouts (directories); default ddcd5cb and 87da04f, the two compared here.
#   WORK: scratch directory (default /tmp/ab-clients); OUT: where the before-<round>.{json,md} and
#   after-<round>.{json,md} files go (default $WORK/results; copy them here to replace these).
#   PYTHON: the interpreter both trees run with (default this checkout's .venv/bin/python); see
#   bench/compare.sh.
# Each tree runs its own bench code: python -m bench.sweep where it exists, bench.run in trees from
# before bench/ was split by role (the same arguments).

work="${WORK:-/tmp/ab-clients}"
# shellcheck source=../../../compare.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../compare.sh"  # repo, python, out, tree, sweep

before=$(tree before "${1:-ddcd5cb}")
after=$(tree after "${2:-87da04f}")
args=(--duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto
      --workloads health,root,embed1,embed1long --no-baselines --no-limit)
for round in 1 2 3; do
  sweep before "$round" "$before" "${args[@]}"
  sweep after "$round" "$after" "${args[@]}"
done
echo "wrote $out"
