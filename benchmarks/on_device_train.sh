#!/usr/bin/env bash
# Issue 19's figures still unmeasured on a GPU, as one device call: the input path at the
# params/ours-closest.yaml setting (does the loader keep up: data wait with 15 workers, from
# raw frames, a jpeg cache decoded in the workers, and one decoded on the device by nvJPEG,
# each with the prefetch thread and without),
# then inductor's max-autotune against its default mode, model only.
#
# Prepared for the device tool (one H200; 15 minutes of device time per session, 10 a
# command): run from the repository root as ONE call with carry [".gpu"] and timeout_s 590:
#     bash benchmarks/on_device_train.sh
# `.gpu/site312.tar.xz` (../shared/gpu/pack.sh) holds the training closure, `.gpu/extra/` pebble
# (the preprocess stage's pool, which writes the benchmark's jpeg cache). Checked here on the
# CPU first with
#     DEVICE=cpu bash benchmarks/on_device_train.sh
# which runs the same steps at the tiny preset. Each step runs under its own `timeout`; logs,
# JSON and exit statuses land in $OUT.
set -u
OUT=${OUT:-reports/on_device_train}
DEVICE=${DEVICE:-cuda}
source benchmarks/on_device_step.sh  # step, device_python
device_python || exit 1
if [ "$DEVICE" = cuda ]; then
    PRESET=(--overlay params/ours-closest.yaml --overlay-batch 32 --presets overlay)
    WORKERS=15
    STEPS=20
    COMPILE=(--compile-backend inductor)
else
    PRESET=(--presets tiny --cpu)
    WORKERS=1
    STEPS=4
    COMPILE=(--compile-backend aot_eager)
fi

# 1. The input path: eager bf16, one row per source of frames, each with the next batches
#    moved (and decoded) in the prefetch thread and without (train.device_prefetch).
step input 240 $PY benchmarks/train.py --attention sdpa "${PRESET[@]}" --modes eager \
    --precisions bf16 --workers "$WORKERS" --no-interleave --steps "$STEPS" \
    --input pool,jpeg,jpeg-device --device-prefetch on,off --json "$OUT/input.json"

# 2. Inductor's modes, model only: default, then max-autotune (its warm-up includes the
#    autotuning; the default row's was 134 s at this size on an H200).
step compiled_default 170 $PY benchmarks/train.py --attention sdpa "${PRESET[@]}" \
    --modes compiled --precisions bf16 --no-loader --steps "$STEPS" "${COMPILE[@]}" \
    --json "$OUT/compiled_default.json"
if [ "$DEVICE" = cuda ]; then
    step max_autotune 170 $PY benchmarks/train.py --attention sdpa "${PRESET[@]}" \
        --modes compiled --precisions bf16 --no-loader --steps "$STEPS" "${COMPILE[@]}" \
        --compile-mode max-autotune --json "$OUT/max_autotune.json"
fi
for log in input compiled_default max_autotune; do
    [ -f "$OUT/$log.log" ] && grep -E "^\| " "$OUT/$log.log" | tail -7
done
echo "done in ${SECONDS}s" | tee -a "$OUT/status.txt"
