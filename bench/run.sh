#!/usr/bin/env bash
# keygate's benchmark harness. See BENCHMARKS.md for what it measures and the figures.
#
#   bench/run.sh            full run: release build, keygate on SQLite and PostgreSQL,
#                           LiteLLM's proxy (installed into target/bench-venv), nginx as a
#                           fast upstream and as a reverse proxy beside keygate, ~40 min
#   bench/run.sh --quick    every phase for a moment (~1 min; CI runs it): fails only
#                           when the benchmark is broken, never because the machine is slow
#
# Extra arguments go to keygate-bench (`--help` lists them), e.g. --no-postgres,
# --users 2000, --point-secs 5, --only limiters. The limiter lanes use the Redis at
# KEYGATE_TEST_REDIS_URL (default redis://127.0.0.1:6379) and PostgreSQL at
# KEYGATE_TEST_POSTGRES_URL; a lane whose server is not there is skipped with a line.
# The harness and keygate-mock are pinned to CPU 0 and the proxy under test to CPU 1
# (taskset); results land in target/bench/results.{md,json}.
#
# The phase against a fast upstream (`--only limit`) needs nginx and wrk: installed here
# from Debian's packages when missing (as root, or with sudo). Without them the phase is
# skipped with a line, except in CI (CI=true), where a missing tool fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
limit=true
args=()
only_next=false
for arg in "$@"; do
    if $only_next; then
        only="$arg"
        only_next=false
    fi
    case "$arg" in
        --quick) quick=true ;;
        --only) only_next=true ;;
        --only=*) only="${arg#--only=}" ;;
    esac
    args+=("$arg")
done
# `--only` without `limit` among its phases: no nginx or wrk needed.
if [ -n "${only:-}" ] && ! [[ ",$only," == *,limit,* ]]; then
    limit=false
fi

# nginx (the fast upstream, and the reverse proxy beside keygate) and wrk (its load).
missing=()
if $limit; then
    command -v nginx > /dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v wrk > /dev/null || missing+=(wrk)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    installed=false
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo > /dev/null; then
        sudo=(sudo)
    else
        sudo=()
        echo "bench: not root and no sudo: cannot install ${missing[*]}" >&2
    fi
    if [ "$(id -u)" -eq 0 ] || [ "${#sudo[@]}" -gt 0 ]; then
        echo "bench: installing ${missing[*]} from Debian's packages (apt-get)" >&2
        if "${sudo[@]}" apt-get update -q \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; then
            installed=true
        fi
    fi
    if ! $installed; then
        if [ "${CI:-}" = true ]; then
            echo "bench: ${missing[*]} not installed: CI needs the phase against a fast upstream (limit)" >&2
            exit 1
        fi
        echo "bench: ${missing[*]} not installed: the phase against a fast upstream (limit) is SKIPPED" >&2
    fi
fi

if [ "$(nproc)" -lt 2 ]; then
    echo "bench: fewer than 2 CPUs: nothing pinned" >&2
    args+=(--proxy-core none)
    pin=()
elif command -v taskset > /dev/null; then
    pin=(taskset -c 0)
else
    echo "bench: taskset not found (util-linux): nothing pinned" >&2
    args+=(--proxy-core none)
    pin=()
fi

if $quick; then
    # The test suite's debug build is enough to prove every phase works.
    cargo build --locked -p keygate -p keygate-mock -p keygate-bench
    bin="${CARGO_TARGET_DIR:-target}/debug"
else
    cargo build --locked --release -p keygate -p keygate-mock -p keygate-bench
    bin="${CARGO_TARGET_DIR:-target}/release"
    venv=target/bench-venv
    if [ ! -x "$venv/bin/litellm" ]; then
        echo "bench: installing LiteLLM's proxy into $venv (pip, once)" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]'
    fi
    args+=(--litellm-venv "$venv")
fi

# Thousands of concurrent streams need file descriptors.
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

status=0
"${pin[@]}" "$bin/keygate-bench" --out target/bench "${args[@]}" || status=$?

# The vault's per-record cost (criterion). Quick mode skips it (`cargo test` already runs
# each of its functions once), and so does a run of chosen phases (`--only`).
if ! $quick && [ -z "${only:-}" ]; then
    cargo bench --locked -p keygate-vault --bench vault -- --noplot 2>&1 | tee target/bench/vault.txt
    cargo bench --locked -p keygate-core --bench guard -- --noplot 2>&1 | tee target/bench/guard.txt
fi
exit "$status"
