#!/usr/bin/env bash
# The distributed shape's checkout benchmark beside pgbench on the same PostgreSQL, in one run:
#   bench/pg-checkout.sh [seconds] [extra `redstore up` flags…]
# e.g. bench/pg-checkout.sh 20 --kafka-brokers 127.0.0.1:9092 --redis-url redis://127.0.0.1:6379
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
admin=${REDSTORE_BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
bin=target/release/redstore
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS redstore_bench WITH (FORCE)" -c "CREATE DATABASE redstore_bench"
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS pgbench_anchor WITH (FORCE)" -c "CREATE DATABASE pgbench_anchor"

echo "== pgbench -b simple-update -c 32 -j 2 -T $secs (the anchor)"
pgbench -q -i -s 10 "$admin/pgbench_anchor" >/dev/null 2>&1
pgbench -b simple-update -c 32 -j 2 -T "$secs" "$admin/pgbench_anchor" 2>/dev/null | grep -E "^(tps|latency average)"

echo "== redstore bench checkout against redstore up --database-url (32 terminals, 3-line sales)"
$bin migrate --database-url "$admin/redstore_bench" 2>/dev/null
$bin up --database-url "postgres://redstore_app@127.0.0.1:5432/redstore_bench" --listen 127.0.0.1:50081 \
  --db-pool-size 16 --no-demo "$@" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/50081) 2>/dev/null && break; sleep 0.2; done
$bin bench checkout --target http://127.0.0.1:50081 --duration "${secs}s" 2>/dev/null
