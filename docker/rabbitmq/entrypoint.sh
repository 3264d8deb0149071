#!/bin/sh
# RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS become a conf.d file read
# before any mounted one (so a secret in 90-*.conf still wins), then the
# server runs in the foreground.
set -eu

# Nothing is written when neither is set (the marketplace's users come from
# definitions, docker/rabbitmq/definitions.sh): the root filesystem may be
# read-only.
defaults=/etc/rabbitmq/conf.d/05-default-user.conf
if [ -e "$defaults" ]; then
    rm -f "$defaults"
fi
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ] || [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then
    {
        [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && printf 'default_user = %s\n' "$RABBITMQ_DEFAULT_USER"
        [ -n "${RABBITMQ_DEFAULT_PASS:-}" ] && printf 'default_pass = %s\n' "$RABBITMQ_DEFAULT_PASS"
        true
    } >"$defaults"
fi

if [ "${1:-}" = rabbitmq-server ]; then
    shift
    # Debian's /usr/sbin wrapper switches user; the image already runs as
    # rabbitmq, so the server script itself runs.
    exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
