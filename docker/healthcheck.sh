#!/bin/sh
# The image's health probe: `docker-healthcheck live|ready`.
#
# Asks /health/<probe> of whichever role runs in the container: the address
# the entrypoint chose (/tmp/marketplace-listen, see MARKETPLACE_LISTEN_PORTS
# in docker/entrypoint.sh), else the API (MARKETPLACE_LISTEN, default :8080),
# else the worker's probes (MARKETPLACE_HEALTH_LISTEN, default :8081).
# A wildcard listen address is asked on the loopback.
set -eu

probe=${1:-live}
case $probe in
    live | ready) ;;
    *)
        echo "usage: docker-healthcheck live|ready" >&2
        exit 2
        ;;
esac

# local_url ADDRESS: http://HOST:PORT/health/PROBE, the wildcard as loopback.
local_url() {
    port=${1##*:}
    host=${1%:*}
    case $host in
        "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;;
    esac
    printf 'http://%s:%s/health/%s' "$host" "$port" "$probe"
}

if [ -r /tmp/marketplace-listen ]; then
    exec curl -fsS -o /dev/null --max-time 2 "$(local_url "$(cat /tmp/marketplace-listen)")"
fi
curl -fsS -o /dev/null --max-time 2 "$(local_url "${MARKETPLACE_LISTEN:-0.0.0.0:8080}")" \
    || exec curl -fsS -o /dev/null --max-time 2 "$(local_url "${MARKETPLACE_HEALTH_LISTEN:-0.0.0.0:8081}")"
