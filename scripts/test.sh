#!/usr/bin/env bash
# make test: the suite in three pytest processes at once. The two modules that run D-Bus stand-ins on GLib's main
# context inside the test process each get a process of their own (in a shared xdist worker one module's loop kept
# the other's stand-ins from starting); they used to run after the rest, one after the other (~1 min added), and
# now run beside it. Their output is shown after the main run's; any failure fails the whole.
# Usage: scripts/test.sh PYTHON WORKERS MODULE...   (the MODULEs are the GLib in-process ones)
set -uo pipefail
py="$1"; workers="$2"; shift 2
logdir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$logdir"' EXIT     # an interrupted run leaves no pytest behind
for module in "$@"; do
    "$py" -m pytest -q -p no:cacheprovider "$module" > "$logdir/$(basename "$module").log" 2>&1 &
    pids+=("$!")
done
"$py" -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile tests $(printf -- '--ignore=%s ' "$@")
status=$?
i=0
for module in "$@"; do
    # pytest.ini's per-test timeout bounds each of them; wait returns when the process ends
    wait "${pids[$i]}"
    rc=$?
    echo "== $module (own process): exit $rc"
    cat "$logdir/$(basename "$module").log"
    [ "$rc" -eq 0 ] || status=1
    i=$((i + 1))
done
exit "$status"
