#!/usr/bin/env bash
# Instructions per create of the SQLite writer's create batches, counted by callgrind on a fixed
# load (issue 15): BATCHES batches of SIZE creates over KEYS keys of one account, each committed
# as the writer commits it (crates/store-sqlite/src/create_batch.rs, `writer_batch_workload`).
# The batches do not depend on timing, so two builds compare to a fraction of a percent; a
# server under callgrind (bench/writer_instructions.py) batches as its threads happen to run.
#
#     bench/writer_batch_instructions.sh [BATCHES] [SIZE] [KEYS]      # defaults: 300 32 64
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${1:-300} size=${2:-32} keys=${3:-64}
bin=$(cargo test --release --locked -p runbase-store-sqlite --lib --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m.get("target", {}).get("name") == "runbase_store_sqlite":
        print(m["executable"])' | tail -1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
RUNBASE_BENCH_BATCHES=$batches RUNBASE_BENCH_SIZE=$size RUNBASE_BENCH_KEYS=$keys \
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" --collect-atstart=no \
    --toggle-collect='*measured_batches*' \
    "$bin" --ignored --exact create_batch::tests::writer_batch_workload --test-threads=1 >/dev/null 2>&1
total=$(callgrind_annotate --auto=no "$out/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
runs=$(( batches * size ))
echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'): $((total / runs)) instructions per create ($runs creates in batches of $size over $keys keys)"
