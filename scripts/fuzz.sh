#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer, nightly Rust): the sealed-record parser, the SSE and
# usage readers, the echo scrubber and the proxy path/query rules (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh --smoke          every target for a few seconds (the test script runs this)
#   scripts/fuzz.sh 600              every target for 600 s
#   scripts/fuzz.sh 3600 proxy_path  one target for an hour
#
# Installs cargo-fuzz (from crates.io) when it is missing. Findings land in
# fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/ (neither is committed).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ "$seconds" = "--smoke" ] && seconds=5
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sealed_record usage_readers echo_scrubber proxy_path)

if ! rustup run nightly rustc --version > /dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain (rustup, minimal profile)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install, once)" >&2
    cargo install --locked cargo-fuzz
fi

status=0
for target in "${targets[@]}"; do
    echo "==> fuzz $target for ${seconds}s"
    if ! cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | grep -v "^#" | tail -n 40; then
        status=1
    fi
done
exit "$status"
