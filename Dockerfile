# syntax=docker/dockerfile:1
#
# The marketplace image: one binary, every role.
#
#   docker build -t marketplace:latest .
#   docker run marketplace:latest serve     # HTTP API on :8080 (the default)
#   docker run marketplace:latest worker    # consumers + outbox relay, probes on :8081
#   docker run marketplace:latest migrate   # apply the migrations and exit
#
# Without a registry (no rust or debian image to pull), from a binary built on
# the host with the same command as the builder stage below:
#
#   cargo build --release --locked -p marketplace
#   DOCKER_BUILDKIT=0 docker build --target local -t marketplace:local \
#       -f Dockerfile CONTEXT   # CONTEXT: docker/, migrations/ and the binary
#                               # as ./marketplace (deploy/build-local-images.sh)
#
# The `local` stage comes before the toolchain stages, so even the classic
# builder, which builds every stage up to its target, never pulls rust:*.
# BASE_IMAGE names the runtime's base (debian:bookworm-slim by default).
#
# Configuration is environment variables only (see marketplace/src/config.rs);
# DATABASE_URL and AMQP_URL can also come from files (DATABASE_URL_FILE,
# AMQP_URL_FILE, e.g. docker secrets): see docker/entrypoint.sh.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG BASE_IMAGE=debian:${DEBIAN_RELEASE}-slim

# --- runtime base: the runtime image, less the binary -------------------------
FROM ${BASE_IMAGE} AS runtime-base

# ca-certificates: TLS to the database or the broker (amqps://, sslmode=...).
# curl: the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 marketplace \
    && useradd --system --uid 10001 --gid marketplace \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin marketplace

# The binary embeds the migrations (migrations/postgres and migrations/sqlite);
# the folder ships for inspection and for tools that apply them from files.
COPY migrations/ /app/migrations/
# Without DATABASE_URL the API keeps an SQLite file in its working
# directory: /data, owned by the runtime user (mount a volume to keep it).
RUN mkdir -p /data && chown 10001:10001 /data
WORKDIR /data
# Plain COPY keeps the scripts' executable bit (no --chmod: the classic
# builder, the only one on some engines, does not know it).
COPY docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY docker/healthcheck.sh /usr/local/bin/docker-healthcheck

LABEL org.opencontainers.image.title="marketplace" \
      org.opencontainers.image.description="Books marketplace API (serve) and workers (worker)" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

USER 10001:10001

# 8080: `serve` (MARKETPLACE_LISTEN); 8081: `worker` probes (MARKETPLACE_HEALTH_LISTEN).
EXPOSE 8080 8081

# Liveness of whichever role runs: the API on 8080, else the worker's probes
# on 8081. Compose and the stack file ask liveness too (not readiness: a
# broker outage must not restart every task); readiness is for traffic.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["docker-healthcheck", "live"]

# SIGTERM starts the graceful shutdown (drain, then exit).
STOPSIGNAL SIGTERM
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["serve"]

# --- local: the runtime with a binary built on the host -----------------------
FROM runtime-base AS local
COPY marketplace /usr/local/bin/marketplace

# --- toolchain + cargo-chef -------------------------------------------------
# cargo-chef turns the workspace's manifests and lock file into a "recipe" and
# builds only the dependencies from it, so they sit in their own layer that is
# reused until a Cargo.toml or Cargo.lock changes. It copes with the four
# workspace members and their explicit [[bin]]/[[test]] targets without a
# hand-maintained list of dummy sources.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# --- recipe: the dependency graph only --------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build ------------------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until the recipe changes.
RUN cargo chef cook --release --locked -p marketplace --recipe-path recipe.json
# The sources (migrations/ included: sqlx::migrate! embeds them at compile time).
COPY . .
RUN cargo build --release --locked -p marketplace \
    && install -D -m 0755 target/release/marketplace /out/marketplace


# --- runtime (the default target): the runtime with the binary built above -----
FROM runtime-base AS runtime
COPY --from=builder /out/marketplace /usr/local/bin/marketplace
