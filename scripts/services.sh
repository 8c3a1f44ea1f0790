#!/usr/bin/env bash
# Starts the PostgreSQL and Redis servers the test suite uses (127.0.0.1:5432 and
# 127.0.0.1:6379) if they are not already running, and fails loudly if it cannot.
set -euo pipefail

wait_for() { # name, check command...
  local name=$1; shift
  for _ in $(seq 1 30); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "FATAL: $name is not running and could not be started" >&2
  exit 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  wait_for "PostgreSQL on 127.0.0.1:5432" pg_isready -h 127.0.0.1 -p 5432 -q
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'SELECT 1' >/dev/null 2>&1; then
  echo "FATAL: PostgreSQL answers but database 'test' (user postgres, trust auth) is not usable" >&2
  exit 1
fi
echo "PostgreSQL: ready on 127.0.0.1:5432"

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "==> starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  wait_for "Redis on 127.0.0.1:6379" sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
echo "Redis: ready on 127.0.0.1:6379"
