#!/bin/bash
# Interleaved before/after: the previous commit's gthread worker vs the edge worker.
for round in 1 2 3; do
  for tree in edge main; do
    cd /path/to/checkout-of-$tree && .venv/bin/python -m bench.run --duration 8 --repeat 1 --warmup 2 --backends onnx --workers 2 --threads auto --workloads health,root,embed1,embed1long --no-baselines --no-limit --out-dir /tmp/ab/$tree-$round --name $tree > /tmp/ab/$tree-$round.log 2>&1
  done
done
echo done > /tmp/ab/DONE
