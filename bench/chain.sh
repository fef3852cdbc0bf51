#!/usr/bin/env bash
# Issue #14's chain benchmark on a fresh deployment: `redstore bench chain` (the chain at rest at
# 1,000 and 10,000 stores, the pgbench anchor, checkout at 1×32, 32×1, 256×1 and 1000×1 stores ×
# terminals, live updates over 1,000 stores) against `redstore up --database-url` or, with
# --split, inventory, sales and the stream bridge as separate processes; one summary at the end:
#   bench/chain.sh [--split] [extra `redstore up`/`serve` flags…] [-- `redstore bench chain` flags…]
# e.g. bench/chain.sh --kafka-brokers 127.0.0.1:9092 --redis-url redis://127.0.0.1:6379
#      bench/chain.sh --split -- --duration 10s --idle-stores 1000 --json
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth;
# a fresh broker for Kafka runs. REDSTORE_BIN names the build (default target/release/redstore).
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${REDSTORE_BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
bin=${REDSTORE_BIN:-target/release/redstore}
split=false
if [ "${1:-}" = "--split" ]; then split=true; shift; fi
server_flags=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do server_flags+=("$1"); shift; done
[ $# -gt 0 ] && shift
bench_flags=("$@")
redis=
for i in "${!server_flags[@]}"; do
  [ "${server_flags[$i]}" = "--redis-url" ] && redis=${server_flags[$((i + 1))]:-}
done

db=redstore_chain
url="postgres://redstore_app@127.0.0.1:5432/$db"
# The bench's store ids are the same every run: a stock hash left in Redis by an earlier run's
# store would be ahead of the fresh database's log.
forget_redis() {
  [ -n "$redis" ] || return 0
  redis-cli -u "$redis" --scan --pattern 'rs:{chain-*' | xargs -r -n 500 redis-cli -u "$redis" del >/dev/null
}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  forget_redis
}
trap cleanup EXIT
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
forget_redis
$bin migrate --database-url "$admin/$db" 2>/dev/null

# Inventory's internal RPCs need the deployment's service token; one made up for this run.
export REDSTORE_SERVICE_TOKEN=${REDSTORE_SERVICE_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
# Every process (and the bench, which signs its staff tokens) uses one signing key.
if [ -z "${REDSTORE_AUTH_SIGNING_KEY_FILE:-}" ]; then
  keydir=$(mktemp -d)
  openssl genpkey -algorithm ed25519 -out "$keydir/signing-key.pem" 2>/dev/null
  export REDSTORE_AUTH_SIGNING_KEY_FILE="$keydir/signing-key.pem"
fi

# `start PORT COMMAND…`: a server process on the database, its pid kept.
start() {
  local port=$1
  shift
  $bin "$@" --database-url "$url" --listen "127.0.0.1:$port" --db-pool-size 16 "${server_flags[@]}" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.2; done
  echo "bench/chain.sh: nothing listens on $port" >&2
  exit 1
}
if $split; then
  echo "== redstore serve inventory + sales + stream-bridge (one worker thread each) ${server_flags[*]}"
  start 50091 serve inventory --worker-threads 1
  start 50092 serve sales --inventory-url http://127.0.0.1:50091 --worker-threads 1
  start 50093 serve stream-bridge --worker-threads 1
  targets=(--target http://127.0.0.1:50092 --inventory-target http://127.0.0.1:50091 --sse-target http://127.0.0.1:50093)
else
  echo "== redstore up --database-url ${server_flags[*]}"
  start 50081 up --no-demo
  targets=(--target http://127.0.0.1:50081)
fi
$bin bench chain "${targets[@]}" --database-url "$url" --admin-url "$admin/postgres" \
  --server-pid "$(IFS=,; echo "${pids[*]}")" "${bench_flags[@]}"
