#!/usr/bin/env bash
# GPU smoke check of the CUDA-only code paths (augmentation on the GPU, bf16 training, evaluation on CUDA):
# synth -> prepare -> refine -> train tiny 2 epochs -> evaluate. Usage: bash bench/gpu_smoke.sh [cuda|cpu]
set -euo pipefail
DEV=${1:-cuda}
W=$(mktemp -d)
G="python3 -m grefel_cli.main"
$G synth "$W/raw" --per-class 20 --characters 3
$G prepare ferg "$W/raw" --data-root "$W/data"
$G refine --dataset ferg --data-root "$W/data"
$G train --dataset ferg --data-root "$W/data" --preset tiny --epochs 2 --device "$DEV" --batch-size 32 --run-dir "$W/runs" --name smoke --per-class 50
$G evaluate --ckpt "$W/runs/smoke/best.pt" --data-root "$W/data" --split test
ls -la "$W/runs/smoke"
