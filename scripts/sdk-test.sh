#!/usr/bin/env bash
# The official OpenAI and Anthropic Python SDKs against keygate (SQLite, a fresh data
# dir) and keygate-mock, both on 127.0.0.1. Makes its own virtual environment under
# target/sdk-venv (pip, from PyPI). Without network to PyPI it skips locally, fails in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, anthropic' 2>/dev/null; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check 'openai>=1.40,<3' 'anthropic>=0.40,<1'; then
    if [ "${CI:-}" = "true" ]; then echo "FATAL: could not install the SDKs from PyPI" >&2; exit 1; fi
    echo "SKIPPED (SDK tests): could not install openai/anthropic from PyPI"
    exit 0
  fi
fi

cargo build --quiet --locked -p keygate -p keygate-mock
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
OPENAI_KEY="sk-proj-sdkCANARY$(date +%s)0000000001"
ANTHROPIC_KEY="sk-ant-api03-sdkCANARY$(date +%s)000001"
mock_port=$(free_port)
target/debug/keygate-mock --listen "127.0.0.1:$mock_port" --valid-key "$OPENAI_KEY" --valid-key "$ANTHROPIC_KEY" >"$work/mock.log" 2>&1 &
pids+=($!)
MOCK_URL="http://127.0.0.1:$mock_port"

export KEYGATE_DATA_DIR="$work/data" KEYGATE_LOG=warn
export KEYGATE_MASTER_KEY=$(target/debug/keygate keygen 2>/dev/null | tail -n1)
export KEYGATE_PROVIDER_OPENAI_BASE_URL="$MOCK_URL" KEYGATE_PROVIDER_ANTHROPIC_BASE_URL="$MOCK_URL"
printf 'sdk-test-password-0001' | target/debug/keygate admin create --email sdk@example.com >/dev/null
TOKEN=$(target/debug/keygate token create --user sdk@example.com --name sdk 2>/dev/null | tail -n1)
port=$(free_port)
KEYGATE_LISTEN="127.0.0.1:$port" target/debug/keygate serve >"$work/keygate.log" 2>&1 &
pids+=($!)
KEYGATE_URL="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$KEYGATE_URL/readyz" >/dev/null && curl -sf "$MOCK_URL/__mock/config" >/dev/null && break; sleep 0.1; done

add_key() {
  curl -sf -X POST "$KEYGATE_URL/api/v1/keys" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"provider\":\"$1\",\"secret\":\"$2\"}" >/dev/null
}
add_key openai "$OPENAI_KEY"
add_key anthropic "$ANTHROPIC_KEY"
curl -sf -X DELETE "$MOCK_URL/__mock/requests" >/dev/null

KEYGATE_URL="$KEYGATE_URL" MOCK_URL="$MOCK_URL" KEYGATE_TOKEN="$TOKEN" OPENAI_KEY="$OPENAI_KEY" ANTHROPIC_KEY="$ANTHROPIC_KEY" \
  "$venv/bin/python" -W ignore::DeprecationWarning tests/sdk/test_sdks.py
status=$?
if grep -q "CANARY" "$work/keygate.log"; then echo "FAIL: a key reached keygate's log" >&2; exit 1; fi
exit $status
