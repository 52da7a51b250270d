# Sourced by the one-shot device scripts (on_device_*.sh), after they set OUT and DEVICE.
# step NAME SECONDS COMMAND...: run COMMAND under timeout, output to $OUT/NAME.log, status to
# $OUT/status.txt (rc 124: the step ran past SECONDS), so one step that hangs or overruns
# cannot take the next ones' device time.
step() {
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - started))s" | tee -a "$OUT/status.txt"
}

# device_python [PATH...]: PY and PYTHONPATH for DEVICE. On cuda, the GPU image's python3 with
# the packages it lacks from .gpu/ (../shared/gpu/pack.sh: site312, extra) and any further
# PATHs; elsewhere the project's venv (the CPU check of the same script).
device_python() {
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1
    if [ "$DEVICE" = cuda ]; then
        source .gpu/on-device.sh >>"$OUT/status.txt" 2>&1 || return 1
        local extra=""
        for path in "$@"; do extra="$extra:$PWD/$path"; done
        export PYTHONPATH=$PWD/.gpu/site312:$PWD/.gpu/extra$extra:$PWD/src:$PWD
        PY=python3
    else
        PY=${PY:-.venv/bin/python}
        export PYTHONPATH=$PWD/src:$PWD
    fi
}
