# syntax=docker/dockerfile:1
#
# Red Store's image: the one `redstore` binary on a distroless base, as a non-root user. Every
# service of the distributed shape runs it (`redstore serve <service>`, deploy/k8s), and so do
# `redstore migrate` and `redstore up`.
#
#   docker build -t ghcr.io/redstore/redstore:0.1.0 .
#   docker run --rm -p 50051:50051 ghcr.io/redstore/redstore:0.1.0     # `redstore up`, the demo chain
#
# Three stages: Node builds the iPad terminal (web/), Rust builds the binary and embeds that build
# (build.rs, REDSTORE_TERMINAL_DIST), and the runtime holds the binary alone.

ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm
# glibc, libgcc, OpenSSL 3 and CA certificates: what the binary links (checked in the build stage).
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- the terminal: TypeScript clients generated from proto/, then Vite -----------------------------
FROM ${NODE_IMAGE} AS terminal
WORKDIR /src
COPY web/package.json web/package-lock.json web/
RUN npm --prefix web ci --no-audit --no-fund
COPY proto/ proto/
COPY web/ web/
RUN npm --prefix web run build -- --outDir /terminal --emptyOutDir

# --- the binary ------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# librdkafka (built from source by rdkafka-sys): make, pkg-config and Python for its build, OpenSSL
# for Kafka over TLS and SASL/SCRAM (linked dynamically: the runtime has libssl3). The base image's
# tag fixes the Debian release; its point releases replace package versions (security fixes among
# them), so exact version pins would only break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make pkg-config python3 libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
COPY --from=terminal /terminal /terminal
# The terminal built above, embedded as it is (no npm here); zlib linked statically, as the runtime
# has none.
ENV REDSTORE_TERMINAL_DIST=/terminal \
    LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin redstore \
 && cp target/release/redstore /usr/local/bin/redstore
# Fail here, not at the first start in a cluster, if the binary needs a shared library the runtime
# image lacks.
RUN unexpected="$(ldd /usr/local/bin/redstore | awk '{print $1}' \
      | grep -Ev '^(linux-vdso|linux-gate|/lib.*/ld-linux[-a-z0-9_.]*|ld-linux[-a-z0-9_.]*)(\.so.*)?$' \
      | grep -Ev '^lib(c|m|dl|rt|pthread|gcc_s|stdc\+\+|ssl|crypto)\.so\.[0-9]+$' || true)" \
 && if [ -n "$unexpected" ]; then echo "redstore links libraries the runtime image lacks: $unexpected" >&2; exit 1; fi \
 && /usr/local/bin/redstore --version

# --- the runtime -----------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="redstore" \
      org.opencontainers.image.description="Red Store: point of sale and inventory for retail chains" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /usr/local/bin/redstore /usr/local/bin/redstore
# distroless' nonroot user, by number, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
WORKDIR /home/nonroot
# In a container the port must be reachable from outside it; `redstore serve` is given --listen too.
ENV REDSTORE_LISTEN=0.0.0.0:50051
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/redstore"]
CMD ["up"]
