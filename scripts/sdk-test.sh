#!/usr/bin/env bash
# The official OpenAI and Anthropic Python SDKs against keygate (SQLite, a fresh data
# dir) and keygate-mock, both on 127.0.0.1. Makes its own virtual environment under
# target/sdk-venv (pip, from PyPI); and the official `openai` Node package (npm, a pinned
# major version, into target/node-sdk) against the unified endpoint. Without network to
# PyPI or the npm registry, that part skips locally (a SKIPPED line) and fails in CI.
# The last line, `sdk: N passed, M failed`, counts both parts.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, anthropic' 2>/dev/null; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check 'openai>=1.40,<3' 'anthropic>=0.40,<1'; then
    if [ "${CI:-}" = "true" ]; then echo "FATAL: could not install the SDKs from PyPI" >&2; exit 1; fi
    echo "SKIPPED (SDK tests): could not install openai/anthropic from PyPI"
    py_skip=1
  fi
fi

node_dir=target/node-sdk
OPENAI_NODE_VERSION='^6'
node_module="$PWD/$node_dir/node_modules/openai/index.mjs"
if [ ! -f "$node_module" ] || ! grep -q '"version": "6\.' "$node_dir/node_modules/openai/package.json"; then
  if ! command -v npm >/dev/null || ! command -v node >/dev/null \
    || ! npm install --prefix "$node_dir" "openai@$OPENAI_NODE_VERSION" --no-audit --no-fund --silent >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then echo "FATAL: could not install openai@$OPENAI_NODE_VERSION from npm" >&2; exit 1; fi
    echo "SKIPPED (Node SDK test): could not install openai@$OPENAI_NODE_VERSION from the npm registry"
    node_skip=1
  fi
fi
if [ -n "${py_skip:-}" ] && [ -n "${node_skip:-}" ]; then exit 0; fi

cargo build --quiet --locked -p keygate -p keygate-mock
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
OPENAI_KEY="sk-proj-sdkCANARY$(date +%s)0000000001"
ANTHROPIC_KEY="sk-ant-api03-sdkCANARY$(date +%s)000001"
GEMINI_KEY="AIzaSy-sdkCANARY$(date +%s)00000000001"
VOYAGE_KEY="pa-sdkCANARY$(date +%s)0000000001"
# An AWS credential the mock verifies SigV4 signatures with (Bedrock behind /v1).
export AWS_KEY_ID="AKIASDK$(date +%s)000"
AWS_SECRET="sdkCANARY$(date +%s)000000000000000000000"
mock_port=$(free_port)
target/debug/keygate-mock --listen "127.0.0.1:$mock_port" --valid-key "$OPENAI_KEY" --valid-key "$ANTHROPIC_KEY" --valid-key "$GEMINI_KEY" --valid-key "$VOYAGE_KEY" --aws-credential "$AWS_KEY_ID:$AWS_SECRET" >"$work/mock.log" 2>&1 &
pids+=($!)
MOCK_URL="http://127.0.0.1:$mock_port"

export KEYGATE_DATA_DIR="$work/data" KEYGATE_LOG=warn
export KEYGATE_MASTER_KEY=$(target/debug/keygate keygen 2>/dev/null | tail -n1)
export KEYGATE_PROVIDER_OPENAI_BASE_URL="$MOCK_URL" KEYGATE_PROVIDER_ANTHROPIC_BASE_URL="$MOCK_URL" KEYGATE_PROVIDER_GEMINI_BASE_URL="$MOCK_URL"
export KEYGATE_PROVIDER_BEDROCK_BASE_URL="$MOCK_URL" KEYGATE_PROVIDER_VOYAGE_BASE_URL="$MOCK_URL"
printf 'sdk-test-password-0001' | target/debug/keygate admin create --email sdk@example.com >/dev/null
TOKEN=$(target/debug/keygate token create --user sdk@example.com --name sdk 2>/dev/null | tail -n1)
# A second user with no key of their own, served by the operator's shared (demo) key.
printf 'sdk-test-password-0002' | target/debug/keygate admin create --email demo@example.com >/dev/null
DEMO_TOKEN=$(target/debug/keygate token create --user demo@example.com --name sdk-demo 2>/dev/null | tail -n1)
port=$(free_port)
# One worker thread: tokio's single-threaded scheduler (what a one-CPU deployment runs);
# the browser and CLI tests serve on the work-stealing one.
KEYGATE_WORKER_THREADS="${KEYGATE_WORKER_THREADS:-1}" KEYGATE_LISTEN="127.0.0.1:$port" target/debug/keygate serve >"$work/keygate.log" 2>&1 &
pids+=($!)
KEYGATE_URL="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$KEYGATE_URL/readyz" >/dev/null && curl -sf "$MOCK_URL/__mock/config" >/dev/null && break; sleep 0.1; done

add_key() {
  curl -sf -X POST "$KEYGATE_URL/api/v1/keys" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"provider\":\"$1\",\"secret\":\"$2\"}" >/dev/null
}
add_key openai "$OPENAI_KEY"
add_key anthropic "$ANTHROPIC_KEY"
curl -sf -X POST "$KEYGATE_URL/api/v1/keys" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"provider\":\"bedrock\",\"secret\":{\"access_key_id\":\"$AWS_KEY_ID\",\"secret_access_key\":\"$AWS_SECRET\",\"region\":\"eu-west-3\"}}" >/dev/null
add_key gemini "$GEMINI_KEY"
add_key voyage "$VOYAGE_KEY"
curl -sf -X POST "$KEYGATE_URL/api/v1/keys" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"provider\":\"anthropic\",\"scope\":\"operator\",\"operator_shared\":true,\"secret\":\"$ANTHROPIC_KEY\"}" >/dev/null
curl -sf -X DELETE "$MOCK_URL/__mock/requests" >/dev/null

status=0
if [ -z "${py_skip:-}" ]; then
  KEYGATE_URL="$KEYGATE_URL" MOCK_URL="$MOCK_URL" KEYGATE_TOKEN="$TOKEN" DEMO_TOKEN="$DEMO_TOKEN" OPENAI_KEY="$OPENAI_KEY" ANTHROPIC_KEY="$ANTHROPIC_KEY" GEMINI_KEY="$GEMINI_KEY" VOYAGE_KEY="$VOYAGE_KEY" \
    "$venv/bin/python" -W ignore::DeprecationWarning tests/sdk/test_sdks.py | tee "$work/python.out" || status=1
fi
if [ -z "${node_skip:-}" ]; then
  KEYGATE_URL="$KEYGATE_URL" KEYGATE_TOKEN="$TOKEN" OPENAI_NODE_MODULE="$node_module" \
    node tests/sdk/test_openai_node.mjs | tee "$work/node.out" || status=1
fi
passed=$(cat "$work"/*.out 2>/dev/null | grep -Eo '^sdk \((python|node)\): [0-9]+ passed' | awk '{s+=$3} END {print s+0}')
failed=$(cat "$work"/*.out 2>/dev/null | grep -Eo '^sdk \((python|node)\): [0-9]+ passed, [0-9]+ failed' | awk '{s+=$5} END {print s+0}')
# A part that died before its summary still counts as a failure.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "sdk: $passed passed, $failed failed"
if grep -q "CANARY" "$work/keygate.log"; then echo "FAIL: a key reached keygate's log" >&2; exit 1; fi
exit $status
