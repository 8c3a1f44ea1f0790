#!/usr/bin/env bash
# Three keygate replicas behind nginx on PostgreSQL + Redis, all on this machine, from
# the machine's own packages (deploy/README.md).
#
#   deploy/run-local.sh            start everything, print the URLs, stop it all on Ctrl-C
#   deploy/run-local.sh --check    start everything, check /readyz through nginx, stop
#   deploy/run-local.sh --fresh    drop the example's database and master key first
#
# What it does: starts PostgreSQL and Redis if they are down (scripts/services.sh),
# installs nginx with apt-get if it is missing (as root), creates the database
# `keygate_deploy` if it does not exist, a master key under target/deploy-local/ if
# there is none, starts replicas on 127.0.0.1:8081-8083 (metrics on :9091-9093) with
# deploy/keygate.toml, then nginx on 127.0.0.1:8080 with deploy/nginx.conf, as a
# foreground process with a configuration under a temporary directory (/etc/nginx is
# never touched). PostgreSQL and Redis are left running afterwards.
#
# Environment: KEYGATE_BIN (default target/release/keygate, built if missing),
# KEYGATE_DEPLOY_DIR (target/deploy-local), KEYGATE_DEPLOY_PG_ADMIN
# (postgres://postgres@127.0.0.1:5432), KEYGATE_DEPLOY_DB (keygate_deploy),
# KEYGATE_DEPLOY_REDIS_URL (redis://127.0.0.1:6379/1: database 1, apart from the tests').
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${KEYGATE_DEPLOY_DIR:-$ROOT/target/deploy-local}
PG_ADMIN=${KEYGATE_DEPLOY_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
DB_NAME=${KEYGATE_DEPLOY_DB:-keygate_deploy}
REDIS_URL=${KEYGATE_DEPLOY_REDIS_URL:-redis://127.0.0.1:6379/1}
BIN=${KEYGATE_BIN:-}
CHECK=false
FRESH=false
for arg in "$@"; do
  case $arg in
    --check) CHECK=true ;;
    --fresh) FRESH=true ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done
[[ $DB_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "KEYGATE_DEPLOY_DB must be a plain lower-case name" >&2; exit 2; }

say() { printf '==> %s\n' "$*"; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

# --- dependencies --------------------------------------------------------------------
"$ROOT/scripts/services.sh"

NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z $NGINX ]]; then
  [[ $(id -u) -eq 0 ]] || die "nginx is not installed: sudo apt-get install -y nginx"
  say "installing nginx (apt-get)"
  apt-get install -y nginx >/dev/null || { apt-get update >/dev/null && apt-get install -y nginx >/dev/null; }
  NGINX=/usr/sbin/nginx
fi

if [[ -z $BIN ]]; then
  BIN=$ROOT/target/release/keygate
  if [[ ! -x $BIN ]]; then
    say "building keygate (cargo build --release -p keygate)"
    (cd "$ROOT" && cargo build --release -p keygate)
  fi
fi
[[ -x $BIN ]] || die "no keygate binary at $BIN"

for port in 8080 8081 8082 8083 9091 9092 9093; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another run of this script?)"
  fi
done

# --- database and master key ---------------------------------------------------------
mkdir -p "$STATE/logs"
chmod 700 "$STATE"
psql_admin() { psql "$PG_ADMIN/postgres" -v ON_ERROR_STOP=1 -qAtc "$1"; }
if $FRESH; then
  say "dropping database $DB_NAME and the example's master key"
  psql_admin "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)"
  rm -f "$STATE/master.key"
fi
if [[ -z $(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
  say "creating database $DB_NAME"
  psql_admin "CREATE DATABASE $DB_NAME"
  rm -f "$STATE/master.key" # a new database gets a new master key
fi
if [[ ! -s $STATE/master.key ]]; then
  say "generating a master key in $STATE/master.key"
  (umask 077 && "$BIN" keygen 2>/dev/null | tail -n1 >"$STATE/master.key")
fi

# --- processes -----------------------------------------------------------------------
RUN=$(mktemp -d -t keygate-deploy.XXXXXX)
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    say "stopping nginx and the replicas"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_ready() { # url, pid, log
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "the process behind $1 exited (log: $3)"; }
    sleep 0.2
  done
  tail -n 20 "$3" >&2
  die "$1 did not answer within 30 s (log: $3)"
}

for i in 1 2 3; do
  log=$STATE/logs/replica-$i.log
  : >"$log"
  # One after another: the first start runs the migrations, and each start of an
  # unclaimed deployment issues a new setup code (the last one printed is the one that works).
  KEYGATE_CONFIG=$ROOT/deploy/keygate.toml \
    KEYGATE_LISTEN=127.0.0.1:808$i \
    KEYGATE_METRICS_LISTEN=127.0.0.1:909$i \
    KEYGATE_DATA_DIR=$STATE/data-$i \
    KEYGATE_DATABASE_URL=$PG_ADMIN/$DB_NAME \
    KEYGATE_REDIS_URL=$REDIS_URL \
    KEYGATE_MASTER_KEY_FILE=$STATE/master.key \
    "$BIN" serve 2>>"$log" >/dev/null &
  PIDS+=($!)
  wait_ready "http://127.0.0.1:808$i/readyz" "$!" "$log"
  say "replica $i ready on http://127.0.0.1:808$i"
done

mkdir -p "$RUN/nginx/temp"
NGINX_USER=""
if [[ $(id -u) -eq 0 ]]; then
  # Workers drop to nobody: let them reach their temporary files.
  chmod 755 "$RUN"
  chown -R nobody "$RUN/nginx/temp"
  NGINX_USER="user nobody nogroup;"
fi
cat >"$RUN/nginx/nginx.conf" <<EOF
# Generated by deploy/run-local.sh: a top-level nginx configuration around deploy/nginx.conf.
$NGINX_USER
daemon off;
worker_processes 2;
pid $RUN/nginx/nginx.pid;
error_log $STATE/logs/nginx-error.log notice;
events { worker_connections 4096; }
http {
    access_log $STATE/logs/nginx-access.log;
    client_body_temp_path $RUN/nginx/temp/client_body;
    proxy_temp_path $RUN/nginx/temp/proxy;
    fastcgi_temp_path $RUN/nginx/temp/fastcgi;
    uwsgi_temp_path $RUN/nginx/temp/uwsgi;
    scgi_temp_path $RUN/nginx/temp/scgi;
    include $ROOT/deploy/nginx.conf;
}
EOF
NGINX_ARGS=(-p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -e "$STATE/logs/nginx-error.log")
"$NGINX" -t -q "${NGINX_ARGS[@]}" || die "nginx refused the configuration ($STATE/logs/nginx-error.log)"
"$NGINX" "${NGINX_ARGS[@]}" &
PIDS+=($!)
wait_ready "http://127.0.0.1:8080/readyz" "$!" "$STATE/logs/nginx-error.log"

code=$(sed -n 's/.*setup code: \([A-Z0-9-]*\).*/\1/p' "$STATE/logs/replica-3.log" | tail -n1)
cat <<EOF

keygate: 3 replicas behind nginx, on PostgreSQL ($DB_NAME) and Redis ($REDIS_URL)
  entry point    http://127.0.0.1:8080          (health: /healthz, /readyz)
  replicas       http://127.0.0.1:8081  http://127.0.0.1:8082  http://127.0.0.1:8083
  metrics        http://127.0.0.1:9091/metrics  :9092  :9093
  logs           $STATE/logs/
EOF
if [[ -n $code ]]; then
  echo "  first run      open http://127.0.0.1:8080/setup and enter the setup code $code"
fi
echo

if $CHECK; then
  for _ in 1 2 3; do
    ready=$(curl -fsS --max-time 5 http://127.0.0.1:8080/readyz) || die "/readyz through nginx failed"
    echo "readyz through nginx: $ready"
    grep -q '"limits":"redis"' <<<"$ready" || die "the replicas do not count limits in Redis: $ready"
  done
  say "check passed"
  exit 0
fi

echo "Ctrl-C stops nginx and the replicas (PostgreSQL and Redis keep running)."
# Until a signal, or until one of the processes exits on its own.
wait -n "${PIDS[@]}" || true
die "a replica or nginx exited on its own; see $STATE/logs/"
