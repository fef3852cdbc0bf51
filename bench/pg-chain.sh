#!/usr/bin/env bash
# Checkout throughput and p99 for one busy store and for sales spread over many stores (stores ×
# terminals each: 1×32, 32×1, 256×1, 1000×1), beside the pgbench anchor of the same run: the
# checkout part of bench/chain.sh, in the one-process shape or, with --split, as separate processes:
#   bench/pg-chain.sh [seconds] [--split] [extra `redstore up`/`serve` flags…]
# e.g. bench/pg-chain.sh 15 --kafka-brokers 127.0.0.1:9092 --redis-url redis://127.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
shift || true
exec bench/chain.sh "$@" -- --duration "${secs}s" --no-live --no-idle
