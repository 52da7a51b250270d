#!/usr/bin/env bash
# Issue 19's one-shot GPU check of the Video Swin window attentions: torchvision / sdpa / flex.
#
# Prepared for the device tool (one H200, 15 minutes of device time in all, 10 a command): run
# from the repository root as ONE call with carry [".gpu"] and timeout_s 590:
#     bash benchmarks/on_device_attention.sh
# `.gpu/site312.tar.xz` (../shared/gpu/pack.sh) holds the packages the GPU image lacks,
# `.gpu/extra/` pebble (the tests' imports). Checked here on the CPU first with
#     DEVICE=cpu bash benchmarks/on_device_attention.sh
# which runs the same steps at the tiny preset (the CUDA tests skip). Each step runs under its
# own `timeout`, so one that hangs or overruns cannot take the next ones' time; every log,
# JSON record and exit status lands in $OUT.
set -u
OUT=${OUT:-reports/on_device_attention}
DEVICE=${DEVICE:-cuda}
source benchmarks/on_device_step.sh  # step, device_python
device_python || exit 1
if [ "$DEVICE" = cuda ]; then
    PRESET=(--overlay params/ours-closest.yaml --overlay-batch 32 --presets overlay --no-loader)
    COMPILE=(--compile-backend inductor)
    STEPS=10
else
    PRESET=(--presets tiny --no-loader --cpu)
    COMPILE=(--compile-backend aot_eager)
    STEPS=3
fi

$PY -c "import torch; print('torch', torch.__version__)" >>"$OUT/status.txt" 2>&1

# 1. Correctness on CUDA: FlexAttention's compiled kernel (eager module) and the sdpa kernel
#    against torchvision, then the inductor-compiled video branch, bias-table gradients
#    included. Two calls, so a package test_compile.py's imports miss cannot hide the first.
step tests_window 60 $PY -m pytest -q -p no:cacheprovider \
    tests/unit/test_window_attention.py -k cuda
step tests_compile 60 $PY -m pytest -q -p no:cacheprovider tests/unit/test_compile.py \
    -k inductor_flex

# 2. Eager bf16, the three attentions side by side (flex's warm-up compiles its kernels per
#    block shape), with each row's top kernels: the ratios vs torchvision and flex vs sdpa.
step eager 170 $PY benchmarks/train.py --attention all "${PRESET[@]}" --modes eager \
    --precisions bf16 --steps "$STEPS" --profile 12 --json "$OUT/eager.json"

# 3. Compiled (inductor) bf16 with flex: the setting flex is for. sdpa's compiled row at this
#    size was measured last session (216.9 ms a step); a same-run pair needs ~150 s more:
#    --attention sdpa,flex with this step's limit at 420.
step compiled 270 $PY benchmarks/train.py --attention flex "${PRESET[@]}" --modes compiled \
    --precisions bf16 --steps "$STEPS" "${COMPILE[@]}" --json "$OUT/compiled.json"

# 4. bf16 against fp32 at every preset (issue 19, part 2), fused attention, eager, no loader:
#    tiny (params.yaml) and paper (paper_size(): Swin-T 32 × 224², AST-base); the overlay
#    preset's pair is in the H200 table of benchmarks/README.md.
if [ "$DEVICE" = cuda ]; then
    step precisions 150 $PY benchmarks/train.py --attention sdpa --presets tiny,paper \
        --modes eager --precisions bf16,fp32 --no-loader --steps "$STEPS" \
        --json "$OUT/precisions.json"
else
    step precisions 60 $PY benchmarks/train.py --attention sdpa --presets tiny --cpu \
        --modes eager --precisions bf16,fp32 --no-loader --steps "$STEPS" \
        --json "$OUT/precisions.json"
fi

echo "done in ${SECONDS}s" | tee -a "$OUT/status.txt"
