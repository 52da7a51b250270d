# Sourced by the one-shot device scripts (on_device_*.sh).
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
