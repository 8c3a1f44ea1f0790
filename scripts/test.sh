#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints, then the whole test suite (unit,
# API and end-to-end tests, each database test against SQLite and PostgreSQL).
#
# PostgreSQL is expected at KEYGATE_TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/test). Locally, when it is down, its tests print
# "SKIPPED (PostgreSQL test)" and pass; with CI=true they fail. `.ci/run` starts the
# services first (scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
# --all-targets: unit, integration and end-to-end tests (keygate has no doc tests).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

echo "==> official SDKs through keygate (scripts/sdk-test.sh)"
set +e
bash scripts/sdk-test.sh 2>&1 | tee -a "$log"
sdk_status=${PIPESTATUS[0]}
set -e
[ "$status" -ne 0 ] || status=$sdk_status

echo "==> web pages in headless Chromium (scripts/browser-test.sh)"
set +e
bash scripts/browser-test.sh 2>&1 | tee -a "$log"
browser_status=${PIPESTATUS[0]}
set -e
[ "$status" -ne 0 ] || status=$browser_status

echo "==> benchmark harness, quick mode (bench/run.sh --quick: fails only if a phase is broken)"
set +e
bash bench/run.sh --quick 2>&1 | tee -a "$log"
bench_status=${PIPESTATUS[0]}
set -e
if [ "$bench_status" -eq 0 ]; then echo "bench: 1 passed, 0 failed" | tee -a "$log"; else echo "bench: 0 passed, 1 failed" | tee -a "$log"; fi
[ "$status" -ne 0 ] || status=$bench_status

echo "==> fuzzing, smoke run (scripts/fuzz.sh --smoke: each target for a few seconds)"
set +e
bash scripts/fuzz.sh --smoke 2>&1 | tee -a "$log"
fuzz_status=${PIPESTATUS[0]}
set -e
if [ "$fuzz_status" -eq 0 ]; then echo "fuzz: 1 passed, 0 failed" | tee -a "$log"; else echo "fuzz: 0 passed, 1 failed" | tee -a "$log"; fi
[ "$status" -ne 0 ] || status=$fuzz_status

passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
sdk_passed=$(grep -Eo '^(sdk|browser|bench|fuzz): [0-9]+ passed' "$log" | awk '{s+=$2} END {print s+0}')
sdk_failed=$(grep -Eo '^(sdk|browser|bench|fuzz): [0-9]+ passed, [0-9]+ failed' "$log" | awk '{s+=$4} END {print s+0}')
passed=$((passed + sdk_passed))
failed=$((failed + sdk_failed))
skipped=$(grep -c 'SKIPPED (' "$log" || true)
echo
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
