#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target in fuzz/ for a short fixed time and fails on the
# first crash, panic, assertion failure, timeout (> 1 s on one input) or OOM.
#
# Needs the nightly toolchain (`rustup toolchain install nightly`). Installs cargo-fuzz only when it
# is missing (`cargo install cargo-fuzz --locked`, about 6 minutes on 2 busy cores; cache
# ~/.cargo/bin in CI). The corpus in fuzz/corpus/<target>/ is read only: new inputs go to a
# scratch directory, so a CI run never dirties the tree. A finding is left in
# fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run <target> <file>).
#
# Environment: FUZZ_SECONDS (per target, default 20), FUZZ_TARGETS (space-separated subset).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz-smoke: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
# Safe Rust needs no AddressSanitizer; debug assertions turn integer overflow into findings.
build_flags=(--sanitizer none --debug-assertions)

# Build every target once up front (cargo fuzz run then finds them up to date).
cargo +nightly fuzz build "${build_flags[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $targets; do
    mkdir -p "$scratch/$t"
    echo "fuzz-smoke: $t for ${seconds}s" >&2
    if ! cargo +nightly fuzz run "${build_flags[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 2>"$scratch/$t.log"; then
        tail -n 40 "$scratch/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^stat::number_of_executed_units' "$scratch/$t.log" | sed "s/^/fuzz-smoke: $t /" >&2 || true
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a finding" >&2
