#!/usr/bin/env bash
# Onboarding a chain with `redstore import`: stores with terminals, the catalog, stock counts,
# generated as CSV files and imported against a fresh server, each step timed:
#   bench/onboard.sh [postgres|embedded] [stores] [terminals per store] [products] [stores with stock]
# e.g. bench/onboard.sh postgres 1000 2 20000 1000   (stock for every store: 20,000,000 counts)
# Needs a release build (cargo build --release) and, for postgres, PostgreSQL on 127.0.0.1:5432
# with trust auth. The CSV files are made once in a temporary directory (not timed).
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-postgres}
stores=${2:-1000}
terminals=${3:-2}
products=${4:-20000}
stock_stores=${5:-$stores}
admin=${REDSTORE_BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
bin=${REDSTORE_BENCH_BIN:-target/release/redstore}
port=50083
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Files: store s-N with terminals t1..tT; products P-000001.. with one EAN-13 each (prefix 20,
# in-store numbers, check digit computed); counts for the first stock_stores stores.
awk -v n="$stores" -v t="$terminals" 'BEGIN {
  print "store_id,name,oversell_policy,terminals";
  for (i = 1; i <= n; i++) { ts = ""; for (j = 1; j <= t; j++) ts = ts (j > 1 ? "|" : "") "t" j;
    printf "s-%d,Store %d,strict,%s\n", i, i, ts } }' > "$work/stores.csv"
awk -v n="$products" 'BEGIN {
  print "sku,name,price_minor,currency,barcodes,active";
  for (i = 1; i <= n; i++) { code = sprintf("20%010d", i); sum = 0;
    for (k = 1; k <= 12; k++) sum += substr(code, k, 1) * (k % 2 ? 1 : 3);
    printf "P-%06d,Product %d,%d,EUR,%s%d,true\n", i, i, 100 + i % 900, code, (10 - sum % 10) % 10 } }' \
  > "$work/products.csv"
awk -v s="$stock_stores" -v n="$products" 'BEGIN {
  print "store_id,sku,quantity";
  for (i = 1; i <= s; i++) for (p = 1; p <= n; p++) printf "s-%d,P-%06d,%d\n", i, p, (i + p) % 50 + 1 }' \
  > "$work/stock.csv"

if [ "$shape" = postgres ]; then
  psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS redstore_onboard WITH (FORCE)" -c "CREATE DATABASE redstore_onboard"
  $bin migrate --database-url "$admin/redstore_onboard" 2>/dev/null
  psql "$admin/postgres" -qc CHECKPOINT
  $bin up --database-url "postgres://redstore_app@127.0.0.1:5432/redstore_onboard" --listen 127.0.0.1:$port \
    --db-pool-size 16 --no-demo 2>/dev/null &
else
  $bin up --data-dir "$work/data" --listen 127.0.0.1:$port --no-demo 2>/dev/null &
fi
data_dir=$([ "$shape" = postgres ] && echo ./redstore-data || echo "$work/data")
server=$!
for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done

echo "== onboarding on $shape: $stores stores x $terminals terminals, $products products, stock in $stock_stores stores"
started=$(date +%s.%N)
for what in stores products stock; do
  # The import signs its calls with the server's key, from the server's data directory.
  $bin import "$what" "$work/$what.csv" --target http://127.0.0.1:$port --data-dir "$data_dir" 2>&1 | grep -v '^$'
done
ended=$(date +%s.%N)
awk -v a="$started" -v b="$ended" 'BEGIN { printf "onboarding total: %.2f s\n", b - a }'
