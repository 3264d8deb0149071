#!/usr/bin/env bash
# Runs the command given (the fault tests) against a throwaway PostgreSQL
# cluster, so that the database outage scenarios stop that cluster and never
# the shared one: creates it on FAULTS_PG_PORT (default 5499) with trust
# authentication, exports FAULTS_PG_URL and FAULTS_PG_CLUSTER, runs the
# command, and drops the cluster whatever the command's outcome.
set -euo pipefail

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
name="${FAULTS_PG_NAME:-faults}"
port="${FAULTS_PG_PORT:-5499}"

if [ "$name" = "main" ]; then
    echo "refusing to use the main cluster" >&2
    exit 2
fi

drop() {
    pg_dropcluster "$version" "$name" --stop >/dev/null 2>&1 || true
}
# A cluster left over by an interrupted run is dropped first.
drop
trap drop EXIT

pg_createcluster "$version" "$name" -p "$port" -- --auth=trust >/dev/null
pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p "$port" -q && break; sleep 1; done
pg_isready -h 127.0.0.1 -p "$port"

export FAULTS_PG_URL="postgres://postgres@127.0.0.1:$port"
export FAULTS_PG_CLUSTER="$version $name"
"$@"
