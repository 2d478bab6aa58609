#!/usr/bin/env bash
# What issue 24 still has to measure, as one device call (benchmarks/RESULTS.md, "GPU, wave 3"):
#   1. Sana end to end vs bare (its "ours" row was invalid in the H100 run; fixed since)     ~80 s
#   2. SDXL 1024², 30 steps, eager and DPM++: target >= 1.6 images/s end to end             ~140 s
#   3. SD1.5 compiled again, then FP8 and the cold / warm actor start probes                ~340 s
# Each step has its own timeout and bench_gpu rewrites its JSON after every row, so a step cut short
# still leaves what it measured and the next step runs. Device call: carry [".whl"], timeout_s 590,
# command `bash benchmarks/gpu_remaining.sh` (the wheels: WHL_DIR=.whl benchmarks/gpu_wheels.sh, here).
# TINY=1 runs the same steps on CPU with tiny presets (a check of this script, not a measurement).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "${TINY:-0}" = 1 ]; then
  TINY_FLAG=--tiny
else
  TINY_FLAG=
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || { echo "gpu_remaining: wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
fi
step() {  # step NAME SECONDS ENV... -- ARGS...: one bench_gpu run, its log beside the JSON
  local name=$1 secs=$2
  shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local t0=$SECONDS
  env "${envs[@]}" timeout "$secs" python3 -m benchmarks.bench_gpu $TINY_FLAG "$@" > "$OUT/log_$name.txt" 2>&1
  echo "gpu_remaining: $name exit $? after $((SECONDS - t0)) s"
}
step sana 80 BENCH_SKIP=pil,tutorial,start,fp8 -- --no-compile --models sana
step sdxl 140 BENCH_SKIP=pil,tutorial,start,fp8 BENCH_BATCHES=2 -- --no-compile --models sdxl
step sd15 340 BENCH_SKIP=pil,tutorial,dpm BENCH_BATCHES=2 -- --models sd15
ls -l "$OUT"
