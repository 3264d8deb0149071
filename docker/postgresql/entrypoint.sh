#!/bin/sh
# First start: initdb in PGDATA with POSTGRES_USER and its password
# (POSTGRES_PASSWORD or the file POSTGRES_PASSWORD_FILE names), password
# authentication for every TCP client, POSTGRES_DB created, and the scripts
# of /docker-entrypoint-initdb.d/ run. Then the command runs in the
# foreground.
set -eu

if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgresql: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set" >&2
        exit 1
    fi
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgresql: the database is uninitialised and POSTGRES_PASSWORD(_FILE) is not set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    # Socket only while the database is created: nobody connects half-ready.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname=postgres \
            -c "CREATE DATABASE \"$db\""
    fi
    # As the official image: scripts in /docker-entrypoint-initdb.d/, in
    # name order, with POSTGRES_USER and POSTGRES_DB set (the marketplace's
    # roles: docker/postgresql/10-marketplace-roles.sh).
    export POSTGRES_USER="$user" POSTGRES_DB="$db"
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$script" ] || continue
        echo "postgresql: running $script" >&2
        sh "$script"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgresql: initialised $PGDATA (user $user, database $db)" >&2
fi

exec "$@"
