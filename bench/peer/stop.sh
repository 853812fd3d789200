#!/usr/bin/env bash
# Stops the processes start.sh launched, using the PIDs it recorded.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
run_dir="${RUN_DIR:-$here/run}"
for name in crabllm mock; do
    pidfile="$run_dir/$name.pid"
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
done
