#!/usr/bin/env bash
# Smoke check of the CUDA-only code paths, end to end on generated faces (synth -> prepare -> refine
# -> train -> evaluate -> predict), tiny preset:
#   - training with the augmentation on the GPU (grid_sample), bf16 autocast, channels-last and the
#     faces held on the device (data_on_device on), stopped after epoch 1 and resumed (the CUDA RNG
#     state comes back from the checkpoint);
#   - fp16 autocast with the GradScaler, batches read by loader workers into pinned memory;
#   - torch.compile with CUDA graphs (compile_mode reduce-overhead);
#   - evaluate and predict on the device (bf16 autocast);
#   - the tests that need a GPU (held batches and GPU augmentation against the CPU's).
# Usage: bash bench/gpu_smoke.sh [cuda|cpu]. With cpu the same steps run on the CPU, except fp16 (a GPU
# precision: fp32 there) and compile (inductor builds C++ for minutes on a small CPU; GREFEL_SMOKE_COMPILE=1
# runs it anyway). Prints "gpu_smoke: all steps passed" at the end; any failing step stops it (exit 1).
set -euo pipefail
DEV=${1:-cuda}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
G="python3 -m grefel_cli.main"
D=(--data-root "$W/data")
T=(train --dataset ferg "${D[@]}" --preset tiny --per-class 50 --batch-size 32 --device "$DEV" --run-dir "$W/runs" -q)
step() { echo "== gpu_smoke [$DEV] $*"; }

step "data: synth, prepare, refine"
$G synth "$W/raw" --per-class 20 --characters 3 >/dev/null
$G prepare ferg "$W/raw" "${D[@]}" >/dev/null
$G refine --dataset ferg "${D[@]}" >/dev/null

step "train: bf16, channels-last, faces held on the device; stop after epoch 1, then resume"
$G "${T[@]}" --name held --epochs 2 --precision bf16 --channels-last --data-on-device on --stop-after 1
$G train --resume "$W/runs/held" "${D[@]}" --device "$DEV" -q
python3 - "$W/runs/held" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
assert [r["epoch"] for r in rows] == [1, 2] and all(r["train_loss"] == r["train_loss"] for r in rows), rows
print(f"   epochs {[r['epoch'] for r in rows]}, loss {rows[-1]['train_loss']:.3f}, val acc {rows[-1]['val_acc']:.3f}")
EOF

if [ "$DEV" = cpu ]; then PREC=fp32; else PREC=fp16; fi
step "train: $PREC (GradScaler on a GPU), batches from 2 loader workers (pinned memory on a GPU)"
$G "${T[@]}" --name loader --epochs 1 --precision "$PREC" --data-on-device off --workers 2

if [ "$DEV" != cpu ] || [ "${GREFEL_SMOKE_COMPILE:-0}" = 1 ]; then
  step "train: torch.compile, reduce-overhead (CUDA graphs on a GPU)"
  $G "${T[@]}" --name compiled --epochs 1 --compile --compile-mode reduce-overhead --data-on-device on
else
  step "train: torch.compile skipped on the CPU (GREFEL_SMOKE_COMPILE=1 runs it)"
fi

step "evaluate and predict on $DEV"
$G evaluate --ckpt "$W/runs/held/best.pt" "${D[@]}" --split test --device "$DEV" --out "$W/test.parquet"
mapfile -t FACES < <(find "$W/raw" -name '*.png' | sort | head -4)
$G predict --ckpt "$W/runs/held/best.pt" --align none --device "$DEV" "${FACES[@]}"

step "tests that need a GPU (skipped without one)"
python3 -m pytest -q -p no:cacheprovider tests/test_resident.py tests/test_augment.py -k gpu

echo "gpu_smoke: all steps passed ($DEV)"
