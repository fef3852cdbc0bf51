#!/usr/bin/env bash
# The chain benchmark: checkout throughput and p99 for one busy store and for sales spread over
# many stores (stores × terminals each: 1×32, 32×1, 256×1, 1000×1), beside the pgbench anchor of
# the same run, in the one-process shape or, with --split, with inventory and sales as separate
# processes:
#   bench/pg-chain.sh [seconds] [--split] [extra `redstore up`/`serve` flags…]
# e.g. bench/pg-chain.sh 15 --kafka-brokers 127.0.0.1:9092 --redis-url redis://127.0.0.1:6379
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
shift || true
split=false
if [ "${1:-}" = "--split" ]; then split=true; shift; fi
db="postgres://redstore_app@127.0.0.1:5432/redstore_bench"
. bench/anchor.sh

wait_for() { for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.2; done; }
if $split; then
  echo "== redstore serve inventory + redstore serve sales (one worker thread each)"
  $bin serve inventory --database-url "$db" --listen 127.0.0.1:50091 --db-pool-size 16 --no-demo --worker-threads 1 "$@" 2>/dev/null &
  inventory=$!
  $bin serve sales --database-url "$db" --inventory-url http://127.0.0.1:50091 --listen 127.0.0.1:50092 \
    --db-pool-size 16 --no-demo --worker-threads 1 "$@" 2>/dev/null &
  sales=$!
  trap 'kill $inventory $sales 2>/dev/null || true' EXIT
  wait_for 50091; wait_for 50092
  targets=(--target http://127.0.0.1:50092 --inventory-target http://127.0.0.1:50091)
else
  echo "== redstore up --database-url"
  $bin up --database-url "$db" --listen 127.0.0.1:50081 --db-pool-size 16 --no-demo "$@" 2>/dev/null &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  wait_for 50081
  targets=(--target http://127.0.0.1:50081)
fi
for spread in "1 32" "32 1" "256 1" "1000 1"; do
  read -r stores each <<< "$spread"
  echo "== $stores stores × $each terminals (3-line sales)"
  $bin bench checkout "${targets[@]}" --duration "${secs}s" --stores "$stores" --terminals $((stores * each)) \
    --store "chain$stores" 2>/dev/null
done
