#!/usr/bin/env bash
# The checkout benchmark with inventory and sales as separate processes (sales calls inventory over
# gRPC), beside pgbench on the same PostgreSQL, in one run:
#   bench/pg-checkout-split.sh [seconds] [extra `redstore serve` flags…]
# Needs a release build (cargo build --release) and PostgreSQL on 127.0.0.1:5432 with trust auth.
# Each service gets one worker thread: two processes (and PostgreSQL, and the client) share the
# machine's cores, as pods limited to a CPU each would.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
db="postgres://redstore_app@127.0.0.1:5432/redstore_bench"
. bench/anchor.sh
# Inventory's internal RPCs need the deployment's service token; one made up for this run.
export REDSTORE_SERVICE_TOKEN=${REDSTORE_SERVICE_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
# Both processes, and the bench signing its staff tokens, use one key.
if [ -z "${REDSTORE_AUTH_SIGNING_KEY_FILE:-}" ]; then
  keydir=$(mktemp -d)
  openssl genpkey -algorithm ed25519 -out "$keydir/signing-key.pem" 2>/dev/null
  export REDSTORE_AUTH_SIGNING_KEY_FILE="$keydir/signing-key.pem"
fi

echo "== redstore bench checkout against redstore serve inventory + redstore serve sales (32 terminals, 3-line sales)"
$bin serve inventory --database-url "$db" --listen 127.0.0.1:50091 --db-pool-size 16 --worker-threads 1 "$@" 2>/dev/null &
inventory=$!
$bin serve sales --database-url "$db" --inventory-url http://127.0.0.1:50091 --listen 127.0.0.1:50092 \
  --db-pool-size 16 --worker-threads 1 "$@" 2>/dev/null &
sales=$!
trap 'kill $inventory $sales 2>/dev/null || true' EXIT
for port in 50091 50092; do
  for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
$bin bench checkout --target http://127.0.0.1:50092 --inventory-target http://127.0.0.1:50091 --duration "${secs}s" 2>/dev/null
