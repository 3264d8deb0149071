#!/bin/sh
# Entrypoint of the marketplace image.
#
# The binary reads DATABASE_URL and AMQP_URL from the environment. For docker
# (swarm) secrets, each may instead name a file holding the value:
#
#   DATABASE_URL_FILE=/run/secrets/database_url  ->  DATABASE_URL=<file content>
#   AMQP_URL_FILE=/run/secrets/amqp_url          ->  AMQP_URL=<file content>
#
# Setting both X and X_FILE is an error. Trailing newlines of the file are
# dropped. Then the arguments go to the binary: `serve` (default), `worker`,
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

file_env DATABASE_URL
file_env AMQP_URL

exec marketplace "$@"
