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
cargo test --workspace --locked
