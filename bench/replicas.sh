#!/usr/bin/env bash
# Three keygate replicas behind nginx against one replica alone (BENCHMARKS.md, "Three
# replicas behind nginx against one").
#
#   bench/replicas.sh              10 s per lane (KEYGATE_BENCH_SECS to change)
#
# The deployment is deploy/run-local.sh's (PostgreSQL, Redis, three replicas on
# 127.0.0.1:8081-8083, nginx on :8080), started fresh under target/bench/replicas/, with
# the OpenAI provider pointed at an nginx of this script's own that answers a fixed chat
# completion at once (the fast upstream). Every call goes out on the operator's platform
# key, so every call is admitted by the Redis limiter (the tier limits are raised out of
# the way). The load is wrk, 2 threads and 64 connections, first on one replica directly,
# then on nginx in front of all three. Nothing is pinned: on a machine with few cores the
# replicas, nginx and wrk share them, which is what the figures then show.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/target/bench/replicas
SECS=${KEYGATE_BENCH_SECS:-10}
BIN=${KEYGATE_BIN:-$ROOT/target/release/keygate}
PROVIDER_KEY=sk-bench-0000000000000000000000000000000000000000
UPSTREAM_PORT=18181

die() { printf 'bench/replicas: %s\n' "$*" >&2; exit 1; }
for tool in nginx wrk curl python3; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || die "$tool is not installed (bench/run.sh installs nginx and wrk)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $BIN ]]; then
  (cd "$ROOT" && cargo build --locked --release -p keygate)
fi
rm -rf "$OUT"
mkdir -p "$OUT/upstream/logs"

# The fast upstream: a fixed OpenAI-shaped answer.
body='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}'
cat >"$OUT/upstream/nginx.conf" <<EOF
master_process off; daemon off; worker_processes 1;
pid $OUT/upstream/nginx.pid; error_log $OUT/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/upstream; proxy_temp_path $OUT/upstream; fastcgi_temp_path $OUT/upstream;
  uwsgi_temp_path $OUT/upstream; scgi_temp_path $OUT/upstream;
  server { listen 127.0.0.1:$UPSTREAM_PORT; location / { default_type application/json; return 200 '$body'; } }
}
EOF
"$NGINX" -p "$OUT/upstream" -c "$OUT/upstream/nginx.conf" -e "$OUT/upstream/logs/error.log" \
  >"$OUT/upstream/logs/stdout.log" 2>&1 </dev/null &
UPSTREAM=$!
DEPLOY=""
cleanup() {
  if [[ -n $DEPLOY ]]; then
    kill -TERM "$DEPLOY" 2>/dev/null || true
    wait "$DEPLOY" 2>/dev/null || true
  fi
  kill "$UPSTREAM" 2>/dev/null || true
  wait "$UPSTREAM" 2>/dev/null || true
}
trap cleanup EXIT

export KEYGATE_PROVIDER_OPENAI_BASE_URL=http://127.0.0.1:$UPSTREAM_PORT
export KEYGATE_DEPLOY_DIR=$OUT/deploy KEYGATE_BIN=$BIN
"$ROOT/deploy/run-local.sh" --fresh >"$OUT/run-local.log" 2>&1 </dev/null &
DEPLOY=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:8080/readyz 2>/dev/null && break
  kill -0 "$DEPLOY" 2>/dev/null || { cat "$OUT/run-local.log" >&2; die "deploy/run-local.sh exited"; }
  sleep 0.2
done
curl -fsS -o /dev/null http://127.0.0.1:8080/readyz || die "the deployment did not become ready ($OUT/run-local.log)"

# An operator, a token, the platform key, and tier limits out of the way.
export KEYGATE_CONFIG=$ROOT/deploy/keygate.toml KEYGATE_MASTER_KEY_FILE=$OUT/deploy/master.key
export KEYGATE_DATABASE_URL=${KEYGATE_DEPLOY_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}/${KEYGATE_DEPLOY_DB:-keygate_deploy}
echo 'bench-password-0123456789' | "$BIN" admin create --email bench@example.com >/dev/null 2>"$OUT/admin.log" ||
  die "keygate admin create failed ($OUT/admin.log)"
TOKEN=$("$BIN" token create --user bench@example.com --name bench 2>>"$OUT/admin.log" | tail -n1)
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
api -X POST http://127.0.0.1:8080/api/v1/keys \
  -d "{\"provider\":\"openai\",\"scope\":\"operator\",\"secret\":\"$PROVIDER_KEY\"}" >/dev/null
api http://127.0.0.1:8080/api/v1/admin/settings | python3 -c '
import json, sys
policy = json.load(sys.stdin)
for tier in policy["tiers"].values():
    tier["requests_per_minute"] = tier["requests_per_day"] = 1_000_000_000
print(json.dumps(policy))' >"$OUT/policy.json"
api -X PUT http://127.0.0.1:8080/api/v1/admin/settings --data @"$OUT/policy.json" >/dev/null

cat >"$OUT/call.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
EOF
for port in 8081 8082 8083 8080; do
  source=$(curl -fsS -o /dev/null -D - -X POST "http://127.0.0.1:$port/proxy/openai/v1/chat/completions" \
    -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"model":"gpt-4o-mini","messages":[]}' |
    tr -d '\r' | sed -n 's/^x-keygate-key-source: //Ip')
  [[ $source == platform ]] || die "a call through :$port was not paid by the platform key (source: ${source:-none})"
done

lane() { # name url
  wrk -t2 -c64 -d"${SECS}s" --latency -s "$OUT/call.lua" "$2/proxy/openai/v1/chat/completions" >"$OUT/$1.txt"
  grep -q 'Non-2xx' "$OUT/$1.txt" && die "$1: some calls failed ($OUT/$1.txt)"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/$1.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$OUT/$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$OUT/$1.txt")
  printf '| %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99"
}
{
  echo "Three replicas behind nginx against one ($(nproc) cores, $(date -u +%Y-%m-%d), bench/replicas.sh, ${SECS} s per lane,"
  echo "wrk -t2 -c64, platform-key calls admitted by the Redis limiter, nginx as the provider):"
  echo
  echo "| lane | requests/s | p50 | p99 |"
  echo "|---|---:|---:|---:|"
  lane one-replica http://127.0.0.1:8081
  lane three-replicas-behind-nginx http://127.0.0.1:8080
} | tee "$OUT/results.md"
