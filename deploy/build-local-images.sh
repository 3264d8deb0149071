#!/usr/bin/env bash
# Builds the images a local run needs, without a registry, on an engine that
# has debian:bookworm-slim (deploy/local-engine.sh makes it):
#
#   marketplace:${TAG:-local}          the app: the Dockerfile's `local` target
#                                      around a binary built on the host
#   marketplace-postgresql:local       docker/postgresql (Debian's PostgreSQL 15)
#   marketplace-rabbitmq:local         docker/rabbitmq (Debian's RabbitMQ 3.10)
#   marketplace-proxy:local            docker/proxy (HAProxy, for the swarm run)
#
# The binary is $CARGO_TARGET_DIR/release/marketplace (default target/), built
# first with the Dockerfile's own command when it is missing:
#   cargo build --release --locked -p marketplace
#
#   bash deploy/build-local-images.sh [app|services|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-local}
WHAT=${1:-all}
BINARY=${MARKETPLACE_BINARY:-${CARGO_TARGET_DIR:-target}/release/marketplace}
# The classic builder: BuildKit would fetch the Dockerfile frontend named by
# its `# syntax=` line from a registry, and the docker CLI may lack buildx.
export DOCKER_BUILDKIT=0

build() {
    local tag=$1 context=$2
    shift 2
    local start=$SECONDS
    # The classic builder's deprecation notice is noise here; errors still show.
    docker build --network host -q -t "$tag" "$@" "$context" 2> >(grep -v -e DEPRECATED -e 'BuildKit is currently' -e 'environment-variable' -e '^$' >&2) >/dev/null
    printf 'built %-34s %4s MB  in %ss\n' "$tag" \
        "$(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f", $1/1e6}')" "$((SECONDS - start))"
}

# In parallel: most of each build waits on package downloads or disk.
pids=()
if [[ $WHAT == app || $WHAT == all ]]; then
    if [[ ! -x $BINARY ]]; then
        echo "build-local-images: $BINARY missing; cargo build --release --locked -p marketplace" >&2
        cargo build --release --locked -p marketplace
    fi
    # A small context: what the `local` stage copies, nothing else.
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    cp -a Dockerfile docker migrations "$context/"
    cp "$BINARY" "$context/marketplace"
    build "marketplace:$TAG" "$context" --target local &
    pids+=($!)
fi
if [[ $WHAT == services || $WHAT == all ]]; then
    build marketplace-postgresql:local docker/postgresql &
    pids+=($!)
    build marketplace-rabbitmq:local docker/rabbitmq &
    pids+=($!)
    build marketplace-proxy:local docker/proxy &
    pids+=($!)
fi
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [[ $failed != 0 ]]; then
    echo "build-local-images: an image failed to build" >&2
    exit 1
fi
