#!/usr/bin/env bash
# Issue 20's one-shot GPU check of the service: batching off against the micro-batcher, 1 and 8
# clients, at the params/ours-closest.yaml size (74.8 M parameters, untrained weights), the
# forward on CUDA (bf16), clips decoded in the server's decode worker processes.
#
# Prepared for the device tool (one H200; 15 minutes of device time per session): run from the
# repository root as ONE call, carry [".gpu"], e.g.
#     bash benchmarks/on_device_serve.sh
# `.gpu/site312.tar.xz` (../shared/gpu/pack.sh) holds the training closure; BentoML and what it
# imports there (29 cp312 wheels, 5 MB, listed in benchmarks/README.md) travel in
# `.gpu/wheels-bento/`. Checked here on the CPU first with
#     DEVICE=cpu OVERLAY= SECONDS_PER_POINT=4 bash benchmarks/on_device_serve.sh
# Each step runs under its own `timeout`; logs, JSON and exit statuses land in $OUT.
# The third step lets a server size itself (serve.batch_size, max_latency_ms, decode_workers:
# auto, emotions.serve.sizing); each server's resolved sizes are printed in its log.
set -u
OUT=${OUT:-reports/on_device_serve}
DEVICE=${DEVICE:-cuda}
OVERLAY=${OVERLAY-params/ours-closest.yaml}
WORKERS=${WORKERS:-14}
SECONDS_PER_POINT=${SECONDS_PER_POINT:-6}
source benchmarks/on_device_step.sh  # step, device_python
if [ "$DEVICE" = cuda ] && [ ! -d .gpu/bento312 ]; then
    for wheel in .gpu/wheels-bento/*.whl; do python3 -m zipfile -e "$wheel" .gpu/bento312/; done
fi
device_python .gpu/bento312 || exit 1

step imports 40 $PY -c "import bentoml, uvicorn, emotions.serve.predictor; print('bentoml', bentoml.__version__)"
step servers 150 $PY benchmarks/serve.py --device "$DEVICE" ${OVERLAY:+--overlay "$OVERLAY"} \
    --configs off,micro --seconds "$SECONDS_PER_POINT" --soak-s 0 --decode-workers "$WORKERS" \
    --json "$OUT/servers.json"
# How many decode workers one GPU needs: the micro-batcher again with 4 of them.
step workers4 75 $PY benchmarks/serve.py --device "$DEVICE" ${OVERLAY:+--overlay "$OVERLAY"} \
    --configs micro --seconds "$SECONDS_PER_POINT" --soak-s 0 --decode-workers 4 \
    --json "$OUT/workers4.json"
# What serve.*: auto chooses on this GPU (batch, latency budget, decoders from a timed forward),
# and what the micro-batcher delivers with it.
step auto 90 $PY benchmarks/serve.py --device "$DEVICE" ${OVERLAY:+--overlay "$OVERLAY"} \
    --configs micro --seconds "$SECONDS_PER_POINT" --soak-s 0 --batch-size auto \
    --max-latency-ms auto --decode-workers auto --json "$OUT/auto.json"
tail -9 "$OUT/servers.log"; tail -5 "$OUT/workers4.log"; tail -6 "$OUT/auto.log"
echo "done in ${SECONDS}s" | tee -a "$OUT/status.txt"
