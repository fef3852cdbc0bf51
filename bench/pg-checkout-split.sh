#!/usr/bin/env bash
# The checkout benchmark with inventory and sales as separate processes (sales calls inventory over
# gRPC), beside pgbench on the same PostgreSQL, in one run:
#   bench/pg-checkout-split.sh [seconds] [extra `redstore serve` flags…]
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
admin=${REDSTORE_BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
db="postgres://redstore_app@127.0.0.1:5432/redstore_bench"
bin=target/release/redstore
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS redstore_bench WITH (FORCE)" -c "CREATE DATABASE redstore_bench"
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS pgbench_anchor WITH (FORCE)" -c "CREATE DATABASE pgbench_anchor"

echo "== pgbench -b simple-update -c 32 -j 2 -T $secs (the anchor)"
pgbench -q -i -s 10 "$admin/pgbench_anchor" >/dev/null 2>&1
pgbench -b simple-update -c 32 -j 2 -T "$secs" "$admin/pgbench_anchor" 2>/dev/null | grep -E "^(tps|latency average)"

echo "== redstore bench checkout against redstore serve inventory + redstore serve sales (32 terminals, 3-line sales)"
$bin migrate --database-url "$admin/redstore_bench" 2>/dev/null
$bin serve inventory --database-url "$db" --listen 127.0.0.1:50091 --db-pool-size 16 --no-demo "$@" 2>/dev/null &
inventory=$!
$bin serve sales --database-url "$db" --inventory-url http://127.0.0.1:50091 --listen 127.0.0.1:50092 \
  --db-pool-size 16 --no-demo "$@" 2>/dev/null &
sales=$!
trap 'kill $inventory $sales 2>/dev/null || true' EXIT
for port in 50091 50092; do
  for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
$bin bench checkout --target http://127.0.0.1:50092 --inventory-target http://127.0.0.1:50091 --duration "${secs}s" 2>/dev/null
