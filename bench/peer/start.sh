#!/usr/bin/env bash
# Starts the mock upstream and crabllm (configured by crabllm.toml) on
# 127.0.0.1 and waits until both answer.
#
#   bench/peer/start.sh [--detach] [CRABLLM_PORT MOCK_PORT]
#
# Without ports, two free ports are picked. Once both servers answer, the
# first stdout line is
#     CRABLLM_URL ACCEPT_KEY LIMITED_KEY MODEL
# (the form bench/bench.py reads), followed by one line per PID.
#
# By default the script then stays in the foreground and stops both servers
# when it gets SIGTERM/SIGINT, when its parent process exits, or when either
# server dies. With --detach it returns at once and leaves them running;
# stop them with stop.sh.
#
# Optional environment:
#   CRABLLM_LOG   RUST_LOG filter for crabllm (default "error"; otherwise
#                 crabllm logs every request at info and every 4xx at warn)
#   MOCK_THREADS  mock upstream worker threads (default 1)
#   RUN_DIR       where PID files and logs go (default bench/peer/run)
# Runs install.sh first if a binary is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

detach=0
if [[ "${1:-}" == "--detach" ]]; then
    detach=1
    shift
fi
if [[ $# -ne 0 && $# -ne 2 ]]; then
    echo "usage: $0 [--detach] [CRABLLM_PORT MOCK_PORT]" >&2
    exit 2
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
crabllm_port="${1:-$(free_port)}"
mock_port="${2:-$(free_port)}"
if [[ "$crabllm_port" == "$mock_port" ]]; then
    mock_port="$(free_port)"
fi

run_dir="${RUN_DIR:-$here/run}"
crabllm_bin="$HOME/.cargo/bin/crabllm"
mock_bin="$here/target/release/mock-upstream"
parent_pid=$PPID

if [[ ! -x "$crabllm_bin" || ! -x "$mock_bin" ]]; then
    "$here/install.sh" >&2
fi
mkdir -p "$run_dir"

for port in "$crabllm_port" "$mock_port"; do
    if ss -Htln "sport = :$port" | grep -q .; then
        echo "port $port is already in use" >&2
        exit 1
    fi
done

mock_pid=""
crabllm_pid=""
stop_all() {
    local pid
    for pid in $crabllm_pid $mock_pid; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $crabllm_pid $mock_pid; do
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -f "$run_dir/crabllm.pid" "$run_dir/mock.pid"
}

# Poll URL until it answers with any HTTP status; give up if PID dies.
wait_for() {
    local name="$1" pid="$2" url="$3" log="$4"
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null --max-time 1 "$url"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during startup; last lines of $log:" >&2
            tail -n 20 "$log" >&2
            stop_all
            exit 1
        fi
        sleep 0.05
    done
    echo "$name did not answer at $url within 10 s; see $log" >&2
    stop_all
    exit 1
}

trap 'stop_all; exit 1' ERR

nohup "$mock_bin" "$mock_port" "${MOCK_THREADS:-1}" \
    >"$run_dir/mock.log" 2>&1 </dev/null &
mock_pid=$!
echo "$mock_pid" >"$run_dir/mock.pid"
wait_for mock-upstream "$mock_pid" "http://127.0.0.1:$mock_port/health" "$run_dir/mock.log"

CRABLLM_MOCK_PORT="$mock_port" RUST_LOG="${CRABLLM_LOG:-error}" \
    nohup "$crabllm_bin" serve --config "$here/crabllm.toml" --bind "127.0.0.1:$crabllm_port" \
    >"$run_dir/crabllm.log" 2>&1 </dev/null &
crabllm_pid=$!
echo "$crabllm_pid" >"$run_dir/crabllm.pid"
wait_for crabllm "$crabllm_pid" "http://127.0.0.1:$crabllm_port/health" "$run_dir/crabllm.log"

echo "http://127.0.0.1:$crabllm_port sk-bench-fast sk-bench-limited mock-model"
echo "crabllm pid=$crabllm_pid"
echo "mock-upstream pid=$mock_pid url=http://127.0.0.1:$mock_port"

if [[ $detach -eq 1 ]]; then
    exit 0
fi

trap 'stop_all; exit 0' TERM INT HUP
while true; do
    if ! kill -0 "$crabllm_pid" 2>/dev/null || ! kill -0 "$mock_pid" 2>/dev/null; then
        echo "a server exited; logs in $run_dir" >&2
        stop_all
        exit 1
    fi
    # bench.py runs this under `sh -c` and signals only the sh, so also
    # stop when the process that started us goes away.
    if ! kill -0 "$parent_pid" 2>/dev/null; then
        stop_all
        exit 0
    fi
    sleep 0.5 &
    wait $! || true
done
