#!/usr/bin/env bash
# Creates the docker swarm secrets stack.yml uses (deploy/README.md, "Least
# privilege", and "Three-node RabbitMQ cluster" for stack.cluster.yml), from
# eight values:
#
#   POSTGRES_PASSWORD           marketplace_postgres_password (the superuser's,
#                               POSTGRES_PASSWORD_FILE; administration only)
#   POSTGRES_MIGRATOR_PASSWORD  marketplace_postgres_migrator_password (the
#                               schema owner's, for the roles' init script) and
#                               marketplace_migrate_database_url (`migrate`)
#   POSTGRES_APP_PASSWORD       marketplace_postgres_app_password and
#                               marketplace_app_database_url (`serve`, `worker`)
#   RABBITMQ_ADMIN_PASSWORD     marketplace_rabbitmq_admin_password (operators)
#   RABBITMQ_API_PASSWORD       marketplace_rabbitmq_api_password,
#                               marketplace_api_amqp_url (`serve`) and
#                               marketplace_api_amqp_cluster_url (`serve` on
#                               the cluster of stack.cluster.yml)
#   RABBITMQ_WORKER_PASSWORD    marketplace_rabbitmq_worker_password,
#                               marketplace_worker_amqp_url (`worker`) and
#                               marketplace_worker_amqp_cluster_url
#   RABBITMQ_ERLANG_COOKIE      marketplace_rabbitmq_erlang_cookie: the shared
#                               secret the cluster's nodes authenticate to each
#                               other with (RABBITMQ_ERLANG_COOKIE_FILE)
#   MARKETPLACE_AUTH_SECRET     marketplace_auth_secret: the HS256 key the API
#                               verifies tokens with (MARKETPLACE_AUTH_SECRET_FILE)
#
# Each value comes from its variable when set, else from a prompt (an empty
# answer generates a random one). Passwords are restricted to URL-safe
# characters, so they go into the URLs as they are. The URLs name the
# stack's services (postgresql:5432, rabbitmq:5672) and the `marketplace`
# virtual host; POSTGRES_ADDRESS and RABBITMQ_ADDRESS change the addresses
# (HOST:PORT, e.g. on the host's network); the cluster's URLs list the
# three nodes of stack.cluster.yml (rabbitmq-1:5672,rabbitmq-2:5672,
# rabbitmq-3:5672), RABBITMQ_CLUSTER_ADDRESSES changes them (comma-separated
# HOST:PORT). Existing secrets are left alone
# (secrets are immutable; rotate under a new name).
#
# Run on a swarm manager: `make secrets` or `bash deploy/create-secrets.sh`.
set -euo pipefail

# The role, user, database and virtual host names stack.yml and the init
# scripts (docker/postgresql/10-marketplace-roles.sh,
# docker/rabbitmq/definitions.sh) use.
DB_NAME=marketplace
DB_MIGRATOR=marketplace_migrator
DB_APP=marketplace_app
MQ_VHOST=marketplace
MQ_API=marketplace-api
MQ_WORKER=marketplace-worker
POSTGRES_ADDRESS=${POSTGRES_ADDRESS:-postgresql:5432}
RABBITMQ_ADDRESS=${RABBITMQ_ADDRESS:-rabbitmq:5672}
RABBITMQ_CLUSTER_ADDRESSES=${RABBITMQ_CLUSTER_ADDRESSES:-rabbitmq-1:5672,rabbitmq-2:5672,rabbitmq-3:5672}

random_password() {
    # 64 hex characters: URL-safe, 256 bits (as an HS256 key should have).
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# ask VAR "description" GENERATE: VAR from the environment, else a prompt,
# else (GENERATE=yes only) a random one.
ask() {
    local var=$1 what=$2 generate=$3 value=${!1:-}
    if [[ -z $value && -t 0 ]]; then
        if [[ $generate == yes ]]; then
            read -r -s -p "$what (empty: generate one): " value
        else
            read -r -s -p "$what (the one already in use): " value
        fi
        echo >&2
    fi
    if [[ -z $value ]]; then
        if [[ $generate != yes ]]; then
            echo "$what: needed (one of its secrets exists already); set it in the environment" >&2
            exit 1
        fi
        value=$(random_password)
        echo "$what: generated" >&2
    fi
    if [[ ! $value =~ ^[A-Za-z0-9._~-]+$ ]]; then
        echo "$what: use only letters, digits and . _ ~ - (it goes into a URL)" >&2
        exit 1
    fi
    printf -v "$var" '%s' "$value"
}

exists() { docker secret inspect "$1" >/dev/null 2>&1; }

# cluster_url USER PASSWORD: one AMQP URL per node of
# RABBITMQ_CLUSTER_ADDRESSES, comma-separated (the app's AMQP_URL list).
cluster_url() {
    local address addresses urls=()
    IFS=',' read -r -a addresses <<<"$RABBITMQ_CLUSTER_ADDRESSES"
    for address in "${addresses[@]}"; do
        urls+=("amqp://$1:$2@$address/$MQ_VHOST")
    done
    local IFS=','
    printf '%s' "${urls[*]}"
}

create() {
    local name=$1 value=$2
    if exists "$name"; then
        echo "secret $name: exists, kept"
    else
        printf '%s' "$value" | docker secret create "$name" - >/dev/null
        echo "secret $name: created"
    fi
}

# VAR "description" SECRET...: the secrets each value goes into.
values=(
    "POSTGRES_PASSWORD|PostgreSQL superuser password|marketplace_postgres_password"
    "POSTGRES_MIGRATOR_PASSWORD|PostgreSQL migration role password|marketplace_postgres_migrator_password marketplace_migrate_database_url"
    "POSTGRES_APP_PASSWORD|PostgreSQL application role password|marketplace_postgres_app_password marketplace_app_database_url"
    "RABBITMQ_ADMIN_PASSWORD|RabbitMQ admin password|marketplace_rabbitmq_admin_password"
    "RABBITMQ_API_PASSWORD|RabbitMQ marketplace-api password|marketplace_rabbitmq_api_password marketplace_api_amqp_url marketplace_api_amqp_cluster_url"
    "RABBITMQ_WORKER_PASSWORD|RabbitMQ marketplace-worker password|marketplace_rabbitmq_worker_password marketplace_worker_amqp_url marketplace_worker_amqp_cluster_url"
    "RABBITMQ_ERLANG_COOKIE|RabbitMQ cluster Erlang cookie|marketplace_rabbitmq_erlang_cookie"
    "MARKETPLACE_AUTH_SECRET|Token signing secret (HS256)|marketplace_auth_secret"
)

missing=0
for entry in "${values[@]}"; do
    IFS='|' read -r _ _ secrets <<<"$entry"
    for name in $secrets; do exists "$name" || missing=1; done
done
if [[ $missing == 0 ]]; then
    echo "all secrets exist; nothing to do"
    exit 0
fi

# A value is generated only when none of the secrets holding it exists yet;
# otherwise it must match the one already stored.
for entry in "${values[@]}"; do
    IFS='|' read -r var what secrets <<<"$entry"
    present=0 absent=0
    for name in $secrets; do
        if exists "$name"; then present=$((present + 1)); else absent=$((absent + 1)); fi
    done
    if [[ $absent == 0 ]]; then
        continue
    elif [[ $present -gt 0 ]]; then
        ask "$var" "$what" no
    else
        ask "$var" "$what" yes
    fi
done

if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
    create marketplace_postgres_password "$POSTGRES_PASSWORD"
fi
if [[ -n ${POSTGRES_MIGRATOR_PASSWORD:-} ]]; then
    create marketplace_postgres_migrator_password "$POSTGRES_MIGRATOR_PASSWORD"
    create marketplace_migrate_database_url \
        "postgres://$DB_MIGRATOR:$POSTGRES_MIGRATOR_PASSWORD@$POSTGRES_ADDRESS/$DB_NAME"
fi
if [[ -n ${POSTGRES_APP_PASSWORD:-} ]]; then
    create marketplace_postgres_app_password "$POSTGRES_APP_PASSWORD"
    create marketplace_app_database_url \
        "postgres://$DB_APP:$POSTGRES_APP_PASSWORD@$POSTGRES_ADDRESS/$DB_NAME"
fi
if [[ -n ${RABBITMQ_ADMIN_PASSWORD:-} ]]; then
    create marketplace_rabbitmq_admin_password "$RABBITMQ_ADMIN_PASSWORD"
fi
if [[ -n ${RABBITMQ_API_PASSWORD:-} ]]; then
    create marketplace_rabbitmq_api_password "$RABBITMQ_API_PASSWORD"
    create marketplace_api_amqp_url "amqp://$MQ_API:$RABBITMQ_API_PASSWORD@$RABBITMQ_ADDRESS/$MQ_VHOST"
    create marketplace_api_amqp_cluster_url "$(cluster_url "$MQ_API" "$RABBITMQ_API_PASSWORD")"
fi
if [[ -n ${RABBITMQ_WORKER_PASSWORD:-} ]]; then
    create marketplace_rabbitmq_worker_password "$RABBITMQ_WORKER_PASSWORD"
    create marketplace_worker_amqp_url "amqp://$MQ_WORKER:$RABBITMQ_WORKER_PASSWORD@$RABBITMQ_ADDRESS/$MQ_VHOST"
    create marketplace_worker_amqp_cluster_url "$(cluster_url "$MQ_WORKER" "$RABBITMQ_WORKER_PASSWORD")"
fi
if [[ -n ${RABBITMQ_ERLANG_COOKIE:-} ]]; then
    create marketplace_rabbitmq_erlang_cookie "$RABBITMQ_ERLANG_COOKIE"
fi
if [[ -n ${MARKETPLACE_AUTH_SECRET:-} ]]; then
    create marketplace_auth_secret "$MARKETPLACE_AUTH_SECRET"
fi
