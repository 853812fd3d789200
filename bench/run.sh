#!/usr/bin/env bash
# Builds release binaries and runs the load benchmarks on 127.0.0.1 (see BENCHMARKS.md).
#   bench/run.sh            full run: c1, c8, c64, 10 s per scenario (about 4 minutes of load)
#   bench/run.sh --quick    smoke run: c8, 1 s per scenario (CI runs this so the script keeps working)
#   bench/run.sh --scale 1000000,10000000
#                           GET, list and create with that many finished runs preloaded
#                           (bench/load_runs.py); 10M takes several minutes and a few GiB of disk
# With PostgreSQL at 127.0.0.1:5432 (and psql) and Redis at 127.0.0.1:6379, the run adds Runbase on
# PostgreSQL, the Redis limiter's 429 path and their ceilings (--postgres off / --redis off skip them;
# --postgres-only runs only those). bench/pg_roundtrips.py counts one run's statements on PostgreSQL.
# Extra arguments go to bench.py (e.g. --durability normal).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
fi

# RUNBASE_BENCH_BIN: a binary already built (CI's smoke run uses the tests' debug build rather
# than building everything again in release; its figures mean nothing, only that the script runs).
if [ -n "${RUNBASE_BENCH_BIN:-}" ]; then
  bin="$RUNBASE_BENCH_BIN"
  CARGO_TARGET_DIR="$PWD/target/bench-ceilings" cargo build --manifest-path bench/ceilings/Cargo.toml
  ceilings="target/bench-ceilings/debug"
else
  cargo build --release --locked -p runbase
  CARGO_TARGET_DIR="$PWD/target/bench-ceilings" cargo build --release --manifest-path bench/ceilings/Cargo.toml
  bin="target/release/runbase"
  ceilings="target/bench-ceilings/release"
fi

peer=()
if [ -x bench/peer/start.sh ] && [ -x "$HOME/.cargo/bin/crabllm" ] && [ "$#" -eq 0 ]; then
  peer=(--peer "bench/peer/start.sh")
fi

exec python3 bench/bench.py --bin "$bin" --ceilings "$ceilings" "${peer[@]}" "$@"
