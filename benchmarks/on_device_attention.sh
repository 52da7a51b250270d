#!/usr/bin/env bash
# Issue 19's one-shot GPU check of the Video Swin window attentions: torchvision / sdpa / flex.
#
# Prepared for the device tool (one H200, 15 minutes of device time in all, 10 a command): run
# from the repository root as ONE call with timeout_s 590, e.g.
#     bash benchmarks/on_device_attention.sh
# where the project's packages the GPU image lacks (pydantic and its needs, as last session)
# travel as cp312 wheels in .whl/ (carry: [".whl"]; benchmarks/README.md, "On one NVIDIA
# H200"). Each step runs under its own `timeout`, so one that hangs or overruns cannot take the
# next ones' time; every log, JSON record and exit status lands in $OUT (7 files; 8 come back).
set -u
OUT=${OUT:-reports/on_device_attention}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-}
OVERLAY=(--overlay params/ours-closest.yaml --overlay-batch 32 --presets overlay --no-loader)

source benchmarks/on_device_step.sh  # step NAME SECONDS COMMAND...

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} >"$OUT/status.txt" 2>&1

# 1. Correctness on CUDA: FlexAttention's compiled kernel (eager module) and the sdpa kernel
#    against torchvision, then the inductor-compiled video branch, bias-table gradients
#    included. Two calls, so a package test_compile.py's imports miss cannot hide the first.
step tests_window 60 python3 -m pytest -q -p no:cacheprovider \
    tests/unit/test_window_attention.py -k cuda
step tests_compile 60 python3 -m pytest -q -p no:cacheprovider tests/unit/test_compile.py \
    -k inductor_flex

# 2. Eager bf16, the three attentions side by side (flex's warm-up compiles its kernels per
#    block shape), with each row's top kernels: the ratios vs torchvision and flex vs sdpa.
step eager 170 python3 benchmarks/train.py --attention all "${OVERLAY[@]}" --modes eager \
    --precisions bf16 --steps 10 --profile 12 --json "$OUT/eager.json"

# 3. Compiled (inductor) bf16 with flex: the setting flex is for. sdpa's compiled row at this
#    size was measured last session (216.9 ms a step); a same-run pair needs ~150 s more:
#    --attention sdpa,flex with this step's limit at 420.
step compiled 270 python3 benchmarks/train.py --attention flex "${OVERLAY[@]}" --modes compiled \
    --precisions bf16 --steps 10 --json "$OUT/compiled.json"

echo "done in ${SECONDS}s" | tee -a "$OUT/status.txt"
