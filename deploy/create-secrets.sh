#!/usr/bin/env bash
# Creates the docker swarm secrets stack.yml uses, from two passwords:
#
#   marketplace_postgres_password  PostgreSQL's password (POSTGRES_PASSWORD_FILE)
#   marketplace_rabbitmq_conf      RabbitMQ's default user, as a conf.d file
#   marketplace_database_url       the app's DATABASE_URL (DATABASE_URL_FILE)
#   marketplace_amqp_url           the app's AMQP_URL (AMQP_URL_FILE)
#
# Passwords come from POSTGRES_PASSWORD and RABBITMQ_PASSWORD when set, else
# from a prompt (an empty answer generates a random one). They are restricted
# to URL-safe characters, so they go into the URLs as they are. The URLs name
# the stack's services (postgresql:5432, rabbitmq:5672); POSTGRES_ADDRESS and
# RABBITMQ_ADDRESS change that (HOST:PORT, e.g. on the host's network). Existing
# secrets are left alone (secrets are immutable; rotate under a new name).
#
# Run on a swarm manager: `make secrets` or `bash deploy/create-secrets.sh`.
set -euo pipefail

# The user and database names stack.yml uses.
DB_USER=marketplace
DB_NAME=marketplace
MQ_USER=marketplace
POSTGRES_ADDRESS=${POSTGRES_ADDRESS:-postgresql:5432}
RABBITMQ_ADDRESS=${RABBITMQ_ADDRESS:-rabbitmq:5672}

random_password() {
    # 32 hex characters: URL-safe, 128 bits.
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
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

create() {
    local name=$1 value=$2
    if exists "$name"; then
        echo "secret $name: exists, kept"
    else
        printf '%s' "$value" | docker secret create "$name" - >/dev/null
        echo "secret $name: created"
    fi
}

names=(marketplace_postgres_password marketplace_rabbitmq_conf marketplace_database_url marketplace_amqp_url)
missing=0
for name in "${names[@]}"; do exists "$name" || missing=1; done
if [[ $missing == 0 ]]; then
    echo "all secrets exist; nothing to do"
    exit 0
fi
# A password is generated only when none of the secrets holding it exists yet;
# otherwise it must match the one already stored.
need() {
    local var=$1 what=$2 a=$3 b=$4
    if exists "$a" && exists "$b"; then
        return
    elif exists "$a" || exists "$b"; then
        ask "$var" "$what" no
    else
        ask "$var" "$what" yes
    fi
}
need POSTGRES_PASSWORD "PostgreSQL password" marketplace_postgres_password marketplace_database_url
need RABBITMQ_PASSWORD "RabbitMQ password" marketplace_rabbitmq_conf marketplace_amqp_url

if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
    create marketplace_postgres_password "$POSTGRES_PASSWORD"
    create marketplace_database_url \
        "postgres://$DB_USER:$POSTGRES_PASSWORD@$POSTGRES_ADDRESS/$DB_NAME"
fi
if [[ -n ${RABBITMQ_PASSWORD:-} ]]; then
    create marketplace_rabbitmq_conf "$(printf 'default_user = %s\ndefault_pass = %s\n' "$MQ_USER" "$RABBITMQ_PASSWORD")"
    create marketplace_amqp_url \
        "amqp://$MQ_USER:$RABBITMQ_PASSWORD@$RABBITMQ_ADDRESS/%2f"
fi
