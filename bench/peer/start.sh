#!/usr/bin/env bash
# Starts the mock upstream and crabllm (configured by crabllm.toml) on
# 127.0.0.1, waits until both answer, and prints their PIDs.
#
#   bench/peer/start.sh CRABLLM_PORT MOCK_PORT
#
# Optional environment:
#   CRABLLM_LOG   RUST_LOG filter for crabllm (default "error"; crabllm logs
#                 every request at info and every 4xx at warn otherwise)
#   MOCK_THREADS  mock upstream worker threads (default 1)
#   RUN_DIR       where PIDs and logs go (default bench/peer/run)
# Runs install.sh first if a binary is missing. Stop with stop.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -ne 2 ]]; then
    echo "usage: $0 CRABLLM_PORT MOCK_PORT" >&2
    exit 2
fi
crabllm_port="$1"
mock_port="$2"
run_dir="${RUN_DIR:-$here/run}"
crabllm_bin="$HOME/.cargo/bin/crabllm"
mock_bin="$here/target/release/mock-upstream"

if [[ ! -x "$crabllm_bin" || ! -x "$mock_bin" ]]; then
    "$here/install.sh"
fi
mkdir -p "$run_dir"

for port in "$crabllm_port" "$mock_port"; do
    if ss -Htln "sport = :$port" | grep -q .; then
        echo "port $port is already in use" >&2
        exit 1
    fi
done

# Poll URL until it answers with any HTTP status, or give up if PID dies.
wait_for() {
    local name="$1" pid="$2" url="$3" log="$4"
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null --max-time 1 "$url"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during startup; log $log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "$name did not answer at $url within 10 s; log $log" >&2
    exit 1
}

nohup "$mock_bin" "$mock_port" "${MOCK_THREADS:-1}" \
    >"$run_dir/mock.log" 2>&1 &
mock_pid=$!
echo "$mock_pid" >"$run_dir/mock.pid"
wait_for mock-upstream "$mock_pid" "http://127.0.0.1:$mock_port/health" "$run_dir/mock.log"

CRABLLM_MOCK_PORT="$mock_port" RUST_LOG="${CRABLLM_LOG:-error}" \
    nohup "$crabllm_bin" serve --config "$here/crabllm.toml" --bind "127.0.0.1:$crabllm_port" \
    >"$run_dir/crabllm.log" 2>&1 &
crabllm_pid=$!
echo "$crabllm_pid" >"$run_dir/crabllm.pid"
wait_for crabllm "$crabllm_pid" "http://127.0.0.1:$crabllm_port/health" "$run_dir/crabllm.log"

echo "mock-upstream pid=$mock_pid url=http://127.0.0.1:$mock_port"
echo "crabllm       pid=$crabllm_pid url=http://127.0.0.1:$crabllm_port"
