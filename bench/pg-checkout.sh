#!/usr/bin/env bash
# The distributed shape's checkout benchmark beside pgbench on the same PostgreSQL, in one run:
#   bench/pg-checkout.sh [seconds] [extra `redstore up` flags…]
# e.g. bench/pg-checkout.sh 20 --kafka-brokers 127.0.0.1:9092 --redis-url redis://127.0.0.1:6379
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
. bench/anchor.sh

echo "== redstore bench checkout against redstore up --database-url (32 terminals, 3-line sales)"
$bin up --database-url "postgres://redstore_app@127.0.0.1:5432/redstore_bench" --listen 127.0.0.1:50081 \
  --db-pool-size 16 --no-demo "$@" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/50081) 2>/dev/null && break; sleep 0.2; done
$bin bench checkout --target http://127.0.0.1:50081 --duration "${secs}s" 2>/dev/null
