#!/usr/bin/env bash
# What a chain costs at rest on PostgreSQL: PostgreSQL transactions/s and each process's CPU and
# RSS with 1,000 and then 10,000 stores (each with a terminal, a stock level and one sale):
#   bench/idle-chain.sh [extra `redstore up` flags…]
# e.g. bench/idle-chain.sh --kafka-brokers 127.0.0.1:9092 --redis-url redis://127.0.0.1:6379
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth.
# REDSTORE_BIN names the build (default target/release/redstore); REDSTORE_SERVER_BIN runs another
# build as the server (an older one, to compare; the bench client is always REDSTORE_BIN).
# REDSTORE_IDLE_CHAIN_SIZES overrides "1000 10000".
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${REDSTORE_BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
bin=${REDSTORE_BIN:-target/release/redstore}
server_bin=${REDSTORE_SERVER_BIN:-$bin}
db=redstore_idle_chain
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
$server_bin migrate --database-url "$admin/$db" 2>/dev/null
url="postgres://redstore_app@127.0.0.1:5432/$db"

echo "== redstore up --database-url $url $*"
$server_bin up --database-url "$url" --listen 127.0.0.1:50082 --no-demo "$@" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/50082) 2>/dev/null && break; sleep 0.2; done
for stores in ${REDSTORE_IDLE_CHAIN_SIZES:-1000 10000}; do
  $bin bench idle-chain --target http://127.0.0.1:50082 --database-url "$url" --server-pid "$server" \
    --stores "$stores" --settle "$((stores / 100 + 20))s" --duration 30s 2>/dev/null
done
