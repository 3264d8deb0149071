#!/bin/sh
# RabbitMQ's users, virtual host and permissions for the marketplace, as a
# definitions file RabbitMQ imports at boot (`load_definitions`, set in
# docker/rabbitmq/20-marketplace.conf). Passwords are docker secrets, so the
# file is made at start, in the /tmp tmpfs, with RabbitMQ's salted SHA-256 hashes
# (rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)),
# 4 random bytes of salt); no clear password is written anywhere.
#
#   definitions.sh json                 prints the definitions
#   definitions.sh exec COMMAND...      writes them to DEFINITIONS_FILE
#                                       (/tmp/marketplace-rabbitmq/definitions.json),
#                                       then runs COMMAND (the image's
#                                       docker-entrypoint.sh rabbitmq-server)
#
# Users (each password from VAR, or the file VAR_FILE names):
#   RABBITMQ_ADMIN_USER (admin), RABBITMQ_ADMIN_PASSWORD
#       tag `administrator` (management UI, rabbitmqctl over HTTP); every
#       permission on the virtual host. For operators only.
#   RABBITMQ_API_USER (marketplace-api), RABBITMQ_API_PASSWORD
#   RABBITMQ_WORKER_USER (marketplace-worker), RABBITMQ_WORKER_PASSWORD
#       no tag (no management access); on RABBITMQ_VHOST only:
#         configure ^NS\.                      declare NS's exchanges and queues
#         write     ^(NS\..*|amq\.default)$    publish to NS's exchanges; bind
#                                              NS's queues; name the default
#                                              exchange as dead-letter exchange
#         read      ^NS\.(?!.*\.dlq$)          consume NS's work queues, bind
#                                              from NS's exchanges; never the
#                                              parked messages of a .dlq
#       where NS is MARKETPLACE_NAMESPACE (marketplace), regex-escaped.
#       deploy/README.md ("Least privilege") explains each one.
# RABBITMQ_VHOST (marketplace): the virtual host, the marketplace's alone.
#
# A node of a cluster (docker/rabbitmq/30-cluster.conf) also needs the
# cluster's shared Erlang cookie: RABBITMQ_ERLANG_COOKIE, or the file
# RABBITMQ_ERLANG_COOKIE_FILE names (a docker secret), is written by `exec`
# to $HOME/.erlang.cookie (the data volume), readable by its owner only, as
# Erlang requires, and the variables are removed from the server's
# environment. The CLI tools (rabbitmq-diagnostics in the healthcheck,
# `docker exec ... rabbitmqctl`) read the same file. Neither set: nothing is
# written, the node makes its own cookie (a single node needs no other).
#
# With definitions to import at boot, RabbitMQ creates no default user: no
# `guest`.
set -eu

# secret VAR: VAR's value, or the content of the file VAR_FILE names.
secret() {
    eval "value=\${$1:-}"
    eval "file=\${$1_FILE:-}"
    if [ -n "$file" ]; then
        if [ -n "$value" ]; then
            echo "rabbitmq definitions: both $1 and $1_FILE are set" >&2
            exit 1
        fi
        value=$(cat "$file")
    fi
    if [ -z "$value" ]; then
        echo "rabbitmq definitions: $1 (or $1_FILE) is needed" >&2
        exit 1
    fi
    printf '%s' "$value"
}

# bytes HEX: the bytes HEX spells.
bytes() {
    for byte in $(printf '%s' "$1" | sed 's/../& /g'); do
        # shellcheck disable=SC2059 # the format is the octal escape itself
        printf "\\$(printf '%03o' "0x$byte")"
    done
}

# password_hash PASSWORD: RabbitMQ's rabbit_password_hashing_sha256 hash.
password_hash() {
    salt=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    digest=$({ bytes "$salt" && printf '%s' "$1"; } | sha256sum | cut -c1-64)
    { bytes "$salt" && bytes "$digest"; } | base64 | tr -d '\n'
}

# json_string TEXT: TEXT as a JSON string (names are plain; quotes and
# backslashes escaped anyway).
json_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"
}

user() { # NAME PASSWORD TAGS(JSON)
    printf '    {"name": %s, "password_hash": "%s", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": %s}' \
        "$(json_string "$1")" "$(password_hash "$2")" "$3"
}

permission() { # USER CONFIGURE WRITE READ
    printf '    {"user": %s, "vhost": %s, "configure": %s, "write": %s, "read": %s}' \
        "$(json_string "$1")" "$(json_string "$vhost")" \
        "$(json_string "$2")" "$(json_string "$3")" "$(json_string "$4")"
}

definitions() {
    vhost=${RABBITMQ_VHOST:-marketplace}
    namespace=${MARKETPLACE_NAMESPACE:-marketplace}
    # The namespace as a regular expression (its dots and any other
    # metacharacter taken literally), then as JSON (each \ doubled).
    ns=$(printf '%s' "$namespace" | sed 's/[].[^$*+?(){}|\\]/\\&/g')
    admin=${RABBITMQ_ADMIN_USER:-admin}
    api=${RABBITMQ_API_USER:-marketplace-api}
    worker=${RABBITMQ_WORKER_USER:-marketplace-worker}
    admin_password=$(secret RABBITMQ_ADMIN_PASSWORD)
    api_password=$(secret RABBITMQ_API_PASSWORD)
    worker_password=$(secret RABBITMQ_WORKER_PASSWORD)
    configure="^$ns\\."
    write="^($ns\\..*|amq\\.default)\$"
    read="^$ns\\.(?!.*\\.dlq\$)"
    printf '{\n  "vhosts": [{"name": %s}],\n  "users": [\n' "$(json_string "$vhost")"
    user "$admin" "$admin_password" '["administrator"]'
    printf ',\n'
    user "$api" "$api_password" '[]'
    printf ',\n'
    user "$worker" "$worker_password" '[]'
    printf '\n  ],\n  "permissions": [\n'
    permission "$admin" '.*' '.*' '.*'
    printf ',\n'
    permission "$api" "$configure" "$write" "$read"
    printf ',\n'
    permission "$worker" "$configure" "$write" "$read"
    printf '\n  ]\n}\n'
}

# erlang_cookie: writes the cluster's cookie, when one is given, to
# $HOME/.erlang.cookie.
erlang_cookie() {
    if [ -z "${RABBITMQ_ERLANG_COOKIE:-}" ] && [ -z "${RABBITMQ_ERLANG_COOKIE_FILE:-}" ]; then
        return 0
    fi
    cookie=$(secret RABBITMQ_ERLANG_COOKIE)
    target=${HOME:-/var/lib/rabbitmq}/.erlang.cookie
    # The file is read-only for its owner: replace it rather than write it.
    rm -f "$target"
    (umask 077 && printf '%s' "$cookie" >"$target")
    echo "rabbitmq definitions: Erlang cookie written to $target" >&2
}

case ${1:-} in
    json)
        definitions
        ;;
    exec)
        shift
        [ $# -gt 0 ] || set -- docker-entrypoint.sh rabbitmq-server
        # Under /tmp: a tmpfs mounted where the image has no directory is
        # owned by root, mode 0755, when the engine restarts the container
        # (Docker 20.10 drops the tmpfs' mode=1777 on a restart), and the
        # rabbitmq user could not write there; /tmp is world-writable in
        # every image, so its tmpfs is too.
        file=${DEFINITIONS_FILE:-/tmp/marketplace-rabbitmq/definitions.json}
        mkdir -p "$(dirname "$file")"
        (umask 077 && definitions >"$file.tmp")
        mv "$file.tmp" "$file"
        erlang_cookie
        unset RABBITMQ_ADMIN_PASSWORD RABBITMQ_API_PASSWORD RABBITMQ_WORKER_PASSWORD \
            RABBITMQ_ERLANG_COOKIE RABBITMQ_ERLANG_COOKIE_FILE
        echo "rabbitmq definitions: users ${RABBITMQ_ADMIN_USER:-admin}, ${RABBITMQ_API_USER:-marketplace-api}, ${RABBITMQ_WORKER_USER:-marketplace-worker} on vhost ${RABBITMQ_VHOST:-marketplace} written to $file" >&2
        exec "$@"
        ;;
    *)
        echo "usage: definitions.sh json | exec COMMAND..." >&2
        exit 2
        ;;
esac
