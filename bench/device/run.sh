#!/usr/bin/env bash
# bash bench/device/run.sh, from the repo root on the GPU machine (carry: [".gl", ".device"], made here by
# bench/device/pack.sh); the payload is unpacked into .device-run/ (git-ignored, not carried). Every step has its own timeout and the whole run a budget (MICSE_DEVICE_BUDGET_S, default
# 420 s): a step that would start with less than MIN_STEP_S left is skipped. Everything printed is appended to
# $OUT/run.log as it comes, so a step that hangs still leaves the earlier results; the bench's JSON reports go to
# $OUT/bench-SIZE.json. Steps, most valuable first:
#   1. machine: nvidia-smi, the packed MANIFEST, python3's torch
#   2. WebGPU adapter (adapter.mjs): Dawn finds the GPU through Vulkan, and a one-kernel compute check
#   3. bench base on webgpu with --profile, PyTorch on cuda in the same run (fp32 ratio + TF32 figure);
#      if the bench fails, reference.py alone so the PyTorch numbers still come back; then bench/gemm.ts
#      (TFLOP/s of each of the step's products on TF.js's kernels and on src/kernels/platform/gemm.ts, $OUT/gemm.json),
#      then (GPU only) base again with MICSE_WEBGPU_GEMM=1 (the step's dense layers on that GEMM; no PyTorch side) and
#      with --precision mixed (against PyTorch AMP, which reference.py times on cuda beside fp32 and TF32)
#   4. bench tiny and small on webgpu (+ PyTorch cuda), then tiny on Dawn's null device (MICSE_DAWN_OPTIONS=backend=null:
#      the same calls, nothing runs): this host's JS + Dawn-front-end share of a step, apart from Vulkan and the GPU;
#      then the step replay off (MICSE_WEBGPU_REPLAY=0) and the bind-group cache off (each: tiny on the null device;
#      GPU only: tiny and small), (GPU only) bench/replay-shapes.ts over the trainer's batch lengths with the buffer
#      pool's budget and without it, and (GPU only) base again
#      with Dawn's robustness transform and validation off (an A/B of the toggles)
#   5. the packed tests (*.test.mjs) under node --test
#   6. python3 bench/check-export.py on the packed export (transformers, sentence-transformers, onnxruntime)
#
# Locally (no GPU), on lavapipe: bash bench/device/lavapipe.sh && source /tmp/micse-lavapipe/env, then
#   MICSE_DEVICE_SIZES=tiny MICSE_DEVICE_LIMIT_SCALE=10 MICSE_DEVICE_BUDGET_S=1200 bash bench/device/run.sh
# Without a working nvidia-smi (or with MICSE_DEVICE_LOCAL=1) nothing is unpacked into / and PyTorch runs on cpu.
set -uo pipefail

cd "$(dirname "$0")/../.."
PACK=.device
# The payload is unpacked beside, not into, .device/, so that .device/ stays what pack.sh made (a later device call
# carries it again as it is). One level below the repo root, as the bundled tests expect.
DEV=.device-run
OUT=${OUT:-/tmp/micse-device-out}
LOG=$OUT/run.log
BUDGET_S=${MICSE_DEVICE_BUDGET_S:-420}
MIN_STEP_S=15
SIZES=${MICSE_DEVICE_SIZES:-base tiny small}
NODE_DIR=/tmp/micse-node
# Where the NVIDIA driver's Vulkan ICD and EGL vendor files are looked for, first found wins.
ICD_CANDIDATES=(/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json)
EGL_CANDIDATES=(/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json /usr/share/glvnd/egl_vendor.d/10_nvidia.json)
# Warm-up steps of every webgpu bench: the first step compiles every WGSL pipeline, the step replay records steps
# until two are alike (the buffer pool settles in the third: four recorded) and its first replay builds its template,
# so after five every timed step is a steady replay (the bench's note says how many timed steps were replayed).
WARMUP=5
# Bench settings per size: timed steps, timeout in s.
declare -A STEPS=([base]=5 [small]=5 [tiny]=5) LIMIT=([base]=210 [small]=75 [tiny]=60)
EXTRA_base="--profile"

mkdir -p "$OUT"
START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
log() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }

# Multiplies every step's timeout: lavapipe on 2 cores runs a tiny step in seconds where the H200 takes milliseconds.
LIMIT_SCALE=${MICSE_DEVICE_LIMIT_SCALE:-1}

# step NAME TIMEOUT_S CMD...: runs CMD under timeout (times LIMIT_SCALE, clamped to the budget left), output
# appended to the log. Returns CMD's status, or 99 when skipped.
step() {
  local name=$1 limit=$(($2 * LIMIT_SCALE))
  shift 2
  local left=$((BUDGET_S - $(elapsed)))
  if ((left < MIN_STEP_S)); then
    log "SKIP $name: ${left}s of the ${BUDGET_S}s budget left"
    SUMMARY+=("$name: skipped (budget)")
    return 99
  fi
  ((limit > left)) && limit=$left
  log "== $name (timeout ${limit}s): $*"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  log "== $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (timed out)')"
  SUMMARY+=("$name: exit $rc")
  return "$rc"
}
# Every step's name and exit status, printed again at the end: the device tool returns the output's last 12,000
# characters, which the tests' report alone fills.
SUMMARY=()

unpack() {
  rm -rf "$DEV"
  mkdir -p "$DEV"
  if command -v xz >/dev/null; then
    tar -xJf "$PACK/payload.tar.xz" -C "$DEV"
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$PACK/payload.tar.xz" "$DEV"
  fi
}

[ -f "$PACK/payload.tar.xz" ] || { log "no $PACK/payload.tar.xz: run bench/device/pack.sh first and carry .device"; exit 1; }
GPU=0
if [ "${MICSE_DEVICE_LOCAL:-0}" != 1 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
log "run.sh: GPU=$GPU, sizes '$SIZES', budget ${BUDGET_S}s, log $LOG"

if ((GPU)); then
  # The device README's recipe: the Vulkan loader and glvnd libraries the NVIDIA ICD needs, unpacked into /.
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  if [ -z "${VK_DRIVER_FILES:-}" ]; then
    for f in "${ICD_CANDIDATES[@]}"; do [ -f "$f" ] && { export VK_DRIVER_FILES=$f; break; }; done
  fi
  if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
    for f in "${EGL_CANDIDATES[@]}"; do [ -f "$f" ] && { export __EGL_VENDOR_LIBRARY_FILENAMES=$f; break; }; done
  fi
  REF_DEVICE=cuda
else
  REF_DEVICE=cpu
fi
log "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset} __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-unset}"

unpack || { log "could not unpack $PACK/payload.tar.xz"; exit 1; }
mkdir -p "$NODE_DIR"
mv "$DEV/node" "$NODE_DIR/node"
export PATH=$NODE_DIR:$PATH PYTHONUNBUFFERED=1 MICSE_SHARED_DIR=$PWD/$DEV/shared
log "unpacked; node $(node --version); $(head -3 "$DEV/MANIFEST.txt" | tr '\n' ' ')"

machine() {
  if ((GPU)); then nvidia-smi; fi
  uname -a
  nproc
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' || true
  cat "$DEV/MANIFEST.txt"
}
export -f machine
export GPU DEV
step machine 30 bash -c machine
step adapter 30 node "$DEV/adapter.mjs"

# MICSE_DEVICE_PROBE=1: instead of the full run, A/B the webgpu base step (each with no PyTorch side): default,
# a larger submit batch, default again (order check), and one default run under node --cpu-prof (summarised by
# cpuprof-summary.mjs); then bench/gemm.ts.
if [ "${MICSE_DEVICE_PROBE:-0}" = 1 ]; then
  base=(node "$DEV/bench.mjs" --backend webgpu --size base --steps 8 --warmup "$WARMUP" --no-reference --embed-sentences 128)
  step "probe: default" 90 "${base[@]}"
  step "probe: submit batch 256" 90 "${base[@]}" --tf-flag WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE=256
  step "probe: default again" 90 "${base[@]}"
  mkdir -p "$OUT/prof"
  step "probe: cpu profile" 90 node --cpu-prof --cpu-prof-dir="$OUT/prof" "$DEV/bench.mjs" --backend webgpu --size base \
    --steps 8 --warmup "$WARMUP" --no-reference --embed-sentences 128
  for f in "$OUT"/prof/*.cpuprofile; do step "probe: cpu profile summary" 30 node bench/device/cpuprof-summary.mjs "$f" 45; done
  rm -rf "$OUT/prof"
  step "gemm products" 90 node "$DEV/gemm.mjs" --backend webgpu --json "$OUT/gemm.json"
  log "probe done in $(elapsed)s"
  exit 0
fi

# MICSE_DEVICE_PROBE=tiles: the base step under each webgpu matmul tile of MICSE_DEVICE_TILES (src/kernels/platform/matmulTiles.ts;
# `default` is TF.js's 32 x 32), each with --profile (the matmul kernels' GPU time), the first with PyTorch beside it,
# the default again last (an order check).
if [ "${MICSE_DEVICE_PROBE:-0}" = tiles ]; then
  TILES=${MICSE_DEVICE_TILES:-default 16,16,4 8,16,4 16,8,4 8,8,8 16,8,8 8,16,8 8,32,4 16,16,8 default}
  reference=(--reference-device "$REF_DEVICE")
  for tile in $TILES; do
    step "tile $tile" 60 env MICSE_WEBGPU_MATMUL_TILE="$tile" node "$DEV/bench.mjs" --backend webgpu --size base --steps 5 \
      --warmup "$WARMUP" --embed-sentences 64 --profile "${reference[@]}"
    reference=(--no-reference)
  done
  log "probe done in $(elapsed)s"
  exit 0
fi

for size in $SIZES; do
  extra=EXTRA_$size
  step "bench $size" "${LIMIT[$size]}" node "$DEV/bench.mjs" --backend webgpu --size "$size" --steps "${STEPS[$size]}" \
    --warmup "$WARMUP" --reference-device "$REF_DEVICE" --json-out "$OUT/bench-$size.json" ${!extra:-}
  rc=$?
  if ((rc != 0 && rc != 99)); then
    step "reference $size alone" 90 python3 "$DEV/reference.py" --size "$size" --steps "${STEPS[$size]}" \
      --warmup "$WARMUP" --device "$REF_DEVICE"
  fi
  if [ "$size" = base ]; then
    # The step's products alone: TFLOP/s per product of the stock WebGPU matmul and of our GEMM.
    step "gemm products" 90 node "$DEV/gemm.mjs" --backend webgpu --json "$OUT/gemm.json"
    # A/B: the base step with its dense layers on our GEMM; compare ms/step and the matmul share with the run above.
    if ((GPU)); then
      step "bench base with MICSE_WEBGPU_GEMM=1" 90 env MICSE_WEBGPU_GEMM=1 node "$DEV/bench.mjs" --backend webgpu --size base \
        --steps 5 --warmup "$WARMUP" --no-reference --embed-sentences 64 --profile --json-out "$OUT/bench-base-gemm.json"
      # train.precision: mixed (f16 product inputs, loss scaling) beside the AMP (bf16 autocast) figure that
      # reference.py timed on cuda in the base run above (its ampMsPerStep).
      step "bench base with --precision mixed" 90 node "$DEV/bench.mjs" --backend webgpu --size base --steps 5 --warmup "$WARMUP" \
        --no-reference --embed-sentences 64 --precision mixed --json-out "$OUT/bench-base-mixed.json"
    fi
  fi
done

# The host's share alone: the null device accepts every call and runs nothing (it holds 512 MB: tiny only).
step "bench tiny on the null device (host share)" 45 env MICSE_DAWN_OPTIONS=backend=null node "$DEV/bench.mjs" --backend webgpu \
  --size tiny --steps 20 --warmup "$WARMUP" --no-reference --embed-sentences 64 --json-out "$OUT/bench-tiny-null.json"

# A/B: every step run by TF.js (MICSE_WEBGPU_REPLAY=0) against the runs above, where steps are replayed from their
# recorded GPU commands (train.webgpuReplay, on by default: src/kernels/replay/webgpu.ts); tiny on the null device and
# (GPU only) tiny and small, no PyTorch side. The bench notes how many steps were replayed.
step "bench tiny on the null device, replay off" 45 env MICSE_DAWN_OPTIONS=backend=null MICSE_WEBGPU_REPLAY=0 \
  node "$DEV/bench.mjs" --backend webgpu --size tiny --steps 20 --warmup "$WARMUP" --no-reference --embed-sentences 64 \
  --json-out "$OUT/bench-tiny-null-noreplay.json"
if ((GPU)); then
  for size in tiny small; do
    step "bench $size, replay off" 60 env MICSE_WEBGPU_REPLAY=0 node "$DEV/bench.mjs" --backend webgpu \
      --size "$size" --steps 5 --warmup "$WARMUP" --no-reference --embed-sentences 64 --json-out "$OUT/bench-$size-noreplay.json"
  done
fi

# A/B: bind groups made per dispatch as TF.js does (MICSE_WEBGPU_BIND_GROUP_CACHE=0, src/kernels/platform/bindGroupCache.ts),
# tiny on the null device and (GPU only) tiny and small, no PyTorch side; compare with the replay-off runs above (a
# replay needs the cache, so these have neither).
step "bench tiny on the null device, bind-group cache off" 45 env MICSE_DAWN_OPTIONS=backend=null MICSE_WEBGPU_BIND_GROUP_CACHE=0 \
  node "$DEV/bench.mjs" --backend webgpu --size tiny --steps 20 --warmup "$WARMUP" --no-reference --embed-sentences 64 \
  --json-out "$OUT/bench-tiny-null-nocache.json"
if ((GPU)); then
  for size in tiny small; do
    step "bench $size, bind-group cache off" 60 env MICSE_WEBGPU_BIND_GROUP_CACHE=0 MICSE_WEBGPU_REPLAY=0 node "$DEV/bench.mjs" --backend webgpu \
      --size "$size" --steps 5 --warmup "$WARMUP" --no-reference --embed-sentences 64 --json-out "$OUT/bench-$size-nocache.json"
  done
fi

# The buffer pool's budget (src/kernels/platform/bufferPool.ts) where batch lengths vary as the trainer's do
# (bench/replay-shapes.ts: the tiny model at hidden 64 on the trainer's 64 sentences a batch at maxSeqLen 64, 374
# steps): the default budget against TF.js's own pool (GPU only: the null device's 512 MB cannot hold the latter).
if ((GPU)); then
  for bound in budget unbounded; do
    step "replay-shapes, pool $bound" 60 env MICSE_WEBGPU_POOL_FREE_MB="${bound/budget/}" node "$DEV/replay-shapes.mjs" --sentences 64
  done
fi

# A/B: Dawn without its robustness transform (every storage index clamped in WGSL) and front-end validation, base,
# no PyTorch side; compare ms/step with the base run above.
if ((GPU)); then
  step "bench base with Dawn toggles disable_robustness,skip_validation" 90 env \
    MICSE_DAWN_OPTIONS="enable-dawn-features=disable_robustness,skip_validation" node "$DEV/bench.mjs" --backend webgpu \
    --size base --steps 5 --warmup "$WARMUP" --no-reference --embed-sentences 64 --json-out "$OUT/bench-base-toggles.json"
fi

tests=("$DEV"/*.test.mjs)
if [ -e "${tests[0]}" ]; then
  step tests 150 node --test --test-reporter=spec "${tests[@]}"
else
  log "no tests were packed (bench/device/pack.sh TEST.ts ... packs them)"
fi

if python3 -c 'import numpy, torch, transformers, sentence_transformers' 2>/dev/null; then
  step check-export 75 python3 bench/check-export.py --export "$DEV/export" --sentences "$DEV/export/sentences.txt" \
    --npy "$DEV/export/micse.npy"
else
  log "SKIP check-export: $(python3 -c 'import numpy, torch, transformers, sentence_transformers' 2>&1 | tail -1)"
fi

log "steps: $(printf '%s; ' "${SUMMARY[@]}")"
log "done in $(elapsed)s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
