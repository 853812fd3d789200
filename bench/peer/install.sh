#!/usr/bin/env bash
# Installs the two programs the peer benchmark runs:
#   - crabllm 0.0.25 into ~/.cargo/bin (sqlite storage feature only; its
#     redis feature does not build). Takes 10+ minutes on 2 cores.
#   - the mock upstream, built into bench/peer/target.
# Skips whatever is already there. CARGO_BUILD_JOBS defaults to 1.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

crabllm_bin="$HOME/.cargo/bin/crabllm"
# crabllm has no --version flag, so ask cargo's install record instead.
if [[ -x "$crabllm_bin" ]] && grep -q '"crabllm 0\.0\.25 ' "$HOME/.cargo/.crates2.json" 2>/dev/null; then
    echo "crabllm 0.0.25 present: $crabllm_bin"
else
    cargo install crabllm@0.0.25 --locked --features storage-sqlite --force
fi

mock_bin="$here/target/release/mock-upstream"
CARGO_TARGET_DIR="$here/target" cargo build --release --manifest-path "$here/mock-upstream/Cargo.toml"
echo "mock upstream: $mock_bin"
