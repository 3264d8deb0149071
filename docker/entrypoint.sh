#!/bin/sh
# Entrypoint of the marketplace image.
#
# The binary reads DATABASE_URL, AMQP_URL and MARKETPLACE_READ_DATABASE_URL
# (a streaming replica for `serve`'s reads) from the environment. For docker
# (swarm) secrets, each may instead name a file holding the value:
#
#   DATABASE_URL_FILE=/run/secrets/database_url  ->  DATABASE_URL=<file content>
#   AMQP_URL_FILE=/run/secrets/amqp_url          ->  AMQP_URL=<file content>
#   MARKETPLACE_READ_DATABASE_URL_FILE=...       ->  MARKETPLACE_READ_DATABASE_URL=...
#
# Setting both X and X_FILE is an error. Trailing newlines of the file are
# dropped.
#
# On the host's network (no routing mesh, e.g. a single-node swarm without
# iptables) several tasks of one node share its ports, and during a
# start-first update the new task runs beside the old one. For that case
# MARKETPLACE_LISTEN_PORTS lists candidate ports: the entrypoint takes the
# first one no socket listens on, on MARKETPLACE_LISTEN_HOST (default
# 0.0.0.0), for the role's listener (`serve`: MARKETPLACE_LISTEN, `worker`:
# MARKETPLACE_HEALTH_LISTEN). The address taken is written to
# /tmp/marketplace-listen for docker-healthcheck.
#
# Then the arguments go to the binary: `serve` (default), `worker`,
# `migrate`, `--help`...
set -eu

# file_env NAME: if NAME_FILE is set, export NAME with the content of that file.
# NAME is always a literal from this script, never user input.
file_env() {
    name=$1
    file_var="${name}_FILE"
    eval "current=\${${name}:-}"
    eval "file=\${${file_var}:-}"
    if [ -n "$file" ]; then
        if [ -n "$current" ]; then
            echo "docker-entrypoint: both $name and $file_var are set; set only one" >&2
            exit 1
        fi
        if [ ! -r "$file" ]; then
            echo "docker-entrypoint: $file_var=$file is not a readable file" >&2
            exit 1
        fi
        value=$(cat "$file")
        if [ -z "$value" ]; then
            echo "docker-entrypoint: $file_var=$file is empty" >&2
            exit 1
        fi
        export "$name=$value"
    fi
    unset "$file_var"
}

# listening PORT: whether a TCP socket of this network namespace listens on
# PORT (/proc/net/tcp*: state 0A is LISTEN; the port is hex after the colon).
listening() {
    hex=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \
        | awk -v port="$hex" '$4 == "0A" { n = split($2, a, ":"); if (a[n] == port) found = 1 } END { exit !found }'
}

# choose_listen_port ROLE: MARKETPLACE_LISTEN_PORTS -> the role's listen address.
choose_listen_port() {
    role=$1
    case $role in
        serve) var=MARKETPLACE_LISTEN ;;
        worker) var=MARKETPLACE_HEALTH_LISTEN ;;
        *) return 0 ;;
    esac
    for port in $MARKETPLACE_LISTEN_PORTS; do
        if ! listening "$port"; then
            address="${MARKETPLACE_LISTEN_HOST:-0.0.0.0}:$port"
            export "$var=$address"
            printf '%s\n' "$address" >/tmp/marketplace-listen
            echo "docker-entrypoint: $var=$address (first free of: $MARKETPLACE_LISTEN_PORTS)" >&2
            return 0
        fi
    done
    echo "docker-entrypoint: every port of MARKETPLACE_LISTEN_PORTS ($MARKETPLACE_LISTEN_PORTS) is taken" >&2
    exit 1
}

file_env DATABASE_URL
file_env AMQP_URL
file_env MARKETPLACE_READ_DATABASE_URL
if [ -n "${MARKETPLACE_LISTEN_PORTS:-}" ]; then
    choose_listen_port "${1:-serve}"
fi
unset MARKETPLACE_LISTEN_PORTS MARKETPLACE_LISTEN_HOST

exec marketplace "$@"
