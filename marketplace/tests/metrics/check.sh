#!/usr/bin/env bash
# Runs the API and a worker on RabbitMQ and PostgreSQL (a database and a
# vhost of their own, removed at the end), plays a small scenario (a user, a
# book, an offer, an order, an unknown route, an offer for a missing book that
# is dead-lettered), then checks both `GET /metrics` outputs with
# `promtool check metrics` (Prometheus text format 0.0.4, naming lints), the
# alert rules with `promtool check rules` and their unit tests
# (`promtool test rules`), and that every metric the
# dashboard and the rules use is in one of the two outputs
# (deploy/observability/check-metric-names.py).
#
# Usage: marketplace/tests/metrics/check.sh
# Environment: DATABASE_URL (a PostgreSQL URL; its server hosts the
# throwaway database), CARGO_TARGET_DIR; METRICS_KEEP=PREFIX keeps the two
# outputs as PREFIX.api and PREFIX.worker; METRICS_CHART=FILE.png then runs
# a load for METRICS_CHART_SECONDS (default 90) and draws the dashboard's
# panels from a scrape every second (deploy/observability/chart.py, needs
# matplotlib).
set -euo pipefail
cd "$(dirname "$0")/../../.."

if ! command -v promtool >/dev/null 2>&1; then
    # Debian's `prometheus` package ships promtool.
    apt-get install -y -q prometheus >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# The workspace's feature set, as `cargo test --workspace --all-features`
# builds it: nothing is compiled again after the tests.
cargo build -q --workspace --all-features --bin marketplace
bin="$CARGO_TARGET_DIR/debug/marketplace"

server_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
server_url="${server_url%/*}"
suffix="$$_$(date +%s)"
database="metrics_check_$suffix"
vhost="metrics-check-$suffix"
work="$(mktemp -d)"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    psql -q "$server_url/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

psql -q "$server_url/postgres" -c "CREATE DATABASE $database" >/dev/null
rabbitmqctl -q add_vhost "$vhost" >/dev/null
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null

export DATABASE_URL="$server_url/$database"
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
# Two attempts, short backoffs: the offer for a missing book is
# dead-lettered within a second.
export MARKETPLACE_RETRY_MAX_ATTEMPTS=2
export MARKETPLACE_RETRY_INITIAL_BACKOFF=50ms
export RUST_LOG=warn

worker_port="$(free_port)"
"$bin" worker --health-listen "127.0.0.1:$worker_port" >"$work/worker.log" 2>&1 &
pids+=("$!")
worker="http://127.0.0.1:$worker_port"

wait_ready() {
    for _ in $(seq 1 120); do
        if curl -fsS "$1/health/ready" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    echo "not ready: $1" >&2
    cat "$work"/*.log >&2
    return 1
}
wait_ready "$worker"

api_port="$(free_port)"
"$bin" serve --bus rabbitmq --listen "127.0.0.1:$api_port" >"$work/api.log" 2>&1 &
pids+=("$!")
api="http://127.0.0.1:$api_port"
wait_ready "$api"

uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
send() {
    curl -fsS -o /dev/null -X "$1" -H 'content-type: application/json' --data "$3" "$api$2"
}
eventually() {
    for _ in $(seq 1 160); do
        if "$@"; then
            return 0
        fi
        sleep 0.25
    done
    echo "condition not met: $*" >&2
    return 1
}
found() { curl -fs -o /dev/null "$api$1"; }
has_metric() { curl -fsS "$1/metrics" | grep -q "$2"; }

user="$(uuid)" book="$(uuid)" offer="$(uuid)" order="$(uuid)"
send PUT /user "{\"id\":\"$user\",\"name\":\"Seller\"}"
send PUT /book "{\"id\":\"$book\",\"title\":\"Dune\",\"author\":\"Frank Herbert\"}"
eventually found "/users/$user"
eventually found "/books/$book"
send POST /offer "{\"id\":\"$offer\",\"bookId\":\"$book\",\"sellerId\":\"$user\",\"price\":12.5,\"stock\":3}"
eventually found "/offers/$book"
send POST /order "{\"id\":\"$order\",\"userId\":\"$user\",\"items\":[{\"offerId\":\"$offer\",\"quantity\":1}]}"
eventually found "/orders/$order"
curl -sS -o /dev/null "$api/no/such/route"
send POST /offer "{\"id\":\"$(uuid)\",\"bookId\":\"$(uuid)\",\"sellerId\":\"$user\",\"price\":7.5,\"stock\":1}"
eventually has_metric "$worker" 'outcome="dead_letter"'
# The worker reads its queues' depths every 15 s: the dead-lettered offer
# shows in its dead-letter queue's gauge.
eventually has_metric "$worker" 'queue_kind="dead_letter"} 1'

for role in api worker; do
    if [ "$role" = api ]; then endpoint="$api"; else endpoint="$worker"; fi
    curl -fsS "$endpoint/metrics" >"$work/$role.prom"
    echo "$endpoint/metrics ($role): $(grep -cv '^#' "$work/$role.prom") samples"
    promtool check metrics <"$work/$role.prom"
    if [ -n "${METRICS_KEEP:-}" ]; then cp "$work/$role.prom" "$METRICS_KEEP.$role"; fi
done

promtool check rules deploy/observability/alerts.yml
promtool test rules deploy/observability/alerts.test.yml
python3 deploy/observability/check-metric-names.py "$work/api.prom" "$work/worker.prom"

if [ -n "${METRICS_CHART:-}" ]; then
    python3 deploy/observability/chart.py --api "$api" --worker "$worker" \
        --seconds "${METRICS_CHART_SECONDS:-90}" --out "$METRICS_CHART"
fi
