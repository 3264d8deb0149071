#!/usr/bin/env bash
# A local PostgreSQL primary with a streaming replica, for trying or testing
# `marketplace serve --read-database-url`. Two throwaway clusters of their
# own (Debian's pg_createcluster), never the shared `main` one:
#
#   start   creates the primary (REPLICA_PRIMARY_NAME, default
#           marketplace-primary, port REPLICA_PRIMARY_PORT, default 5497)
#           with wal_level=replica and trust replication on loopback, then
#           the replica (REPLICA_NAME, default marketplace-replica, port
#           REPLICA_PORT, default 5498) with `pg_basebackup -R` from it,
#           waits until the replica is in recovery and the primary shows it
#           streaming, and prints both URLs and how long it took.
#   stop    drops both clusters.
#   status  shows both clusters and the replication state.
#
# Needs root (pg_createcluster, runuser) on a host with Debian's
# postgresql-common.
set -euo pipefail

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
primary="${REPLICA_PRIMARY_NAME:-marketplace-primary}"
primary_port="${REPLICA_PRIMARY_PORT:-5497}"
replica="${REPLICA_NAME:-marketplace-replica}"
replica_port="${REPLICA_PORT:-5498}"

for name in "$primary" "$replica"; do
    if [ "$name" = "main" ]; then
        echo "refusing to use the main cluster" >&2
        exit 2
    fi
done
for port in "$primary_port" "$replica_port"; do
    if [ "$port" = "5432" ]; then
        echo "refusing port 5432 (the main cluster's)" >&2
        exit 2
    fi
done

primary_url="postgres://postgres@127.0.0.1:$primary_port"
replica_url="postgres://postgres@127.0.0.1:$replica_port"

sql() { # port, query: one value
    psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -AtXq -c "$2"
}

await() { # description, seconds, command...
    local description="$1" seconds="$2"
    shift 2
    for _ in $(seq 1 "$((seconds * 5))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "timed out waiting for $description" >&2
    return 1
}

in_recovery() { [ "$(sql "$replica_port" 'SELECT pg_is_in_recovery()')" = t ]; }
streaming() {
    [ "$(sql "$primary_port" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" -ge 1 ]
}

drop() {
    pg_dropcluster "$version" "$replica" --stop >/dev/null 2>&1 || true
    pg_dropcluster "$version" "$primary" --stop >/dev/null 2>&1 || true
}

start() {
    local started=$SECONDS
    # Clusters left over by an earlier run are dropped first.
    drop

    pg_createcluster "$version" "$primary" -p "$primary_port" -- --auth=trust >/dev/null
    local conf="/etc/postgresql/$version/$primary"
    cat >>"$conf/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 5
EOF
    cat >>"$conf/pg_hba.conf" <<EOF
host replication postgres 127.0.0.1/32 trust
host replication postgres ::1/128 trust
EOF
    pg_ctlcluster --skip-systemctl-redirect "$version" "$primary" start
    await "the primary" 30 pg_isready -h 127.0.0.1 -p "$primary_port" -q

    pg_createcluster "$version" "$replica" -p "$replica_port" -- --auth=trust >/dev/null
    echo "listen_addresses = '127.0.0.1'" >>"/etc/postgresql/$version/$replica/postgresql.conf"
    local data="/var/lib/postgresql/$version/$replica"
    # An empty data directory of postgres's (the server runs as postgres),
    # which pg_basebackup fills.
    rm -rf "$data"
    install -d -m 700 -o postgres -g postgres "$data"
    runuser -u postgres -- pg_basebackup -h 127.0.0.1 -p "$primary_port" -U postgres \
        -D "$data" -R -X stream -c fast
    pg_ctlcluster --skip-systemctl-redirect "$version" "$replica" start
    await "the replica" 30 pg_isready -h 127.0.0.1 -p "$replica_port" -q
    await "the replica to be in recovery" 30 in_recovery
    await "the primary to stream to the replica" 30 streaming

    echo "primary: $primary_url"
    echo "replica: $replica_url"
    echo "started in $((SECONDS - started))s"
}

status() {
    pg_lsclusters | awk -v a="$primary" -v b="$replica" 'NR == 1 || $2 == a || $2 == b'
    if pg_isready -h 127.0.0.1 -p "$primary_port" -q; then
        sql "$primary_port" "SELECT 'primary streams to ' || host(client_addr) || ': ' || state FROM pg_stat_replication"
    fi
    if pg_isready -h 127.0.0.1 -p "$replica_port" -q; then
        echo "replica in recovery: $(sql "$replica_port" 'SELECT pg_is_in_recovery()')"
    fi
    echo "primary: $primary_url"
    echo "replica: $replica_url"
}

case "${1:-}" in
start) start ;;
stop) drop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
