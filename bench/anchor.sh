# Sourced by the checkout benchmarks: fresh databases, then the pgbench anchor, in the same run.
# Expects `secs`; sets `admin` (an admin URL without database) and `bin`.
admin=${REDSTORE_BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
bin=target/release/redstore
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS redstore_bench WITH (FORCE)" -c "CREATE DATABASE redstore_bench"
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS pgbench_anchor WITH (FORCE)" -c "CREATE DATABASE pgbench_anchor"

echo "== pgbench -b simple-update -c 32 -j 2 -T $secs (the anchor)"
pgbench -q -i -s 10 "$admin/pgbench_anchor" >/dev/null 2>&1
# Each measured phase starts from a checkpoint: neither pays for the other's dirty pages.
psql "$admin/postgres" -qc CHECKPOINT
logs=$(mktemp -d)
pgbench -b simple-update -c 32 -j 2 -T "$secs" -l --log-prefix="$logs/tx" "$admin/pgbench_anchor" 2>/dev/null \
  | grep -E "^(tps|latency average)"
# pgbench's own latency percentiles, from its per-transaction log (third column: microseconds).
cat "$logs"/tx* | awk '{print $3}' | sort -n | awk '{v[NR] = $1} END {
  printf "pgbench latency: p50 %.2f ms, p95 %.2f ms, p99 %.2f ms\n", v[int(NR*0.50)]/1e3, v[int(NR*0.95)]/1e3, v[int(NR*0.99)]/1e3 }'
rm -rf "$logs"
# pgbench measured a quiet server: so does the benchmark after it (no autovacuum of pgbench's
# dead rows behind it).
psql "$admin/postgres" -qc "DROP DATABASE pgbench_anchor WITH (FORCE)" -c CHECKPOINT
$bin migrate --database-url "$admin/redstore_bench" 2>/dev/null
