#!/usr/bin/env bash
# A throwaway Docker engine on a machine that has none, for running the
# image, docker-compose.yml and stack.yml for real without a registry:
#
#   bash deploy/local-engine.sh start    # install, start dockerd, make debian:bookworm-slim
#   export DOCKER_HOST=unix://...        # the line `start` and `env` print
#   bash deploy/local-engine.sh status
#   bash deploy/local-engine.sh stop     # stop it and remove everything it made
#
# What it does, and why:
# - Installs what is missing from Debian's packages: docker.io (dockerd, its
#   CLI, containerd, runc), debootstrap, docker-compose. A policy-rc.d that
#   refuses service starts is in place during the install, so the package's
#   own init script never starts a default dockerd.
# - Starts dockerd with every path under one folder (ENGINE_DIR, default
#   ${TMPDIR:-/tmp}/marketplace-engine), the vfs storage driver (works on any
#   filesystem, no kernel module), and no iptables, no bridge, no IP
#   forwarding, no IP masquerading: the engine never changes the machine's
#   network settings. Containers therefore use the host's network
#   (`--network host`, `network_mode: host`, swarm ports in `mode: host`).
# - Makes the base image debian:bookworm-slim locally, since no image
#   registry is reachable: `debootstrap --variant=minbase bookworm`, with the
#   machine's apt configuration copied into the root filesystem so apt-get in
#   a build reaches the same Debian mirror, then `docker import`.
# - `stop` leaves a swarm, removes containers, stops dockerd and its
#   containerd, unmounts what is left under ENGINE_DIR, deletes network
#   links the engine created, and removes ENGINE_DIR.
#
# Exits non-zero, saying why, when the engine cannot start.
set -euo pipefail

ENGINE_DIR=${ENGINE_DIR:-${TMPDIR:-/tmp}/marketplace-engine}
SOCKET=$ENGINE_DIR/docker.sock
PIDFILE=$ENGINE_DIR/dockerd.pid
LOG=$ENGINE_DIR/dockerd.log
BASE_IMAGE=debian:bookworm-slim
SUITE=bookworm
START_TIMEOUT=${ENGINE_START_TIMEOUT:-60}

say() { printf 'local-engine: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

export DOCKER_HOST=unix://$SOCKET

# --- install -----------------------------------------------------------------
apt_updated=no
apt_install() {
    if [[ $apt_updated == no ]]; then
        say "apt-get update"
        apt-get update -qq >&2
        apt_updated=yes
    fi
    say "installing $*"
    # Keep package scripts from starting a system-wide dockerd.
    local guard=no
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        guard=yes
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
    [[ $guard == yes ]] && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

install_missing() {
    local packages=()
    command -v dockerd >/dev/null || packages+=(docker.io)
    command -v docker >/dev/null || packages+=(docker.io)
    command -v debootstrap >/dev/null || packages+=(debootstrap)
    command -v docker-compose >/dev/null || packages+=(docker-compose)
    if [[ ${#packages[@]} -gt 0 ]]; then
        [[ $(id -u) == 0 ]] || die "missing ${packages[*]}; run as root to install them"
        mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
        apt_install "${packages[@]}" || die "could not install ${packages[*]} from Debian's packages"
    fi
}

# --- engine ------------------------------------------------------------------
engine_pid() {
    [[ -r $PIDFILE ]] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
    if engine_pid >/dev/null; then
        say "dockerd already running (pid $(engine_pid)) in $ENGINE_DIR"
        return
    fi
    [[ $(id -u) == 0 ]] || die "dockerd needs root"
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
    # Network links before the engine starts: `stop` deletes only new ones.
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' >"$ENGINE_DIR/links.before" || true
    # Its own (empty) configuration file: /etc/docker/daemon.json, if any,
    # must not switch iptables or a storage driver back on.
    # --no-new-privileges: every container, swarm tasks included (whose
    # `security_opt` an engine of this age does not apply), as
    # deploy/README.md asks of production nodes.
    printf '{}\n' >"$ENGINE_DIR/daemon.json"
    say "starting dockerd in $ENGINE_DIR"
    setsid dockerd \
        --config-file "$ENGINE_DIR/daemon.json" \
        --storage-driver vfs \
        --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --bridge=none \
        --no-new-privileges \
        --data-root "$ENGINE_DIR/data" \
        --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$PIDFILE" \
        -H "unix://$SOCKET" \
        --log-level warn \
        </dev/null >"$LOG" 2>&1 &
    local deadline=$((SECONDS + START_TIMEOUT))
    until engine_answers; do
        if ((SECONDS > deadline)) || ! kill -0 $! 2>/dev/null; then
            say "THE DOCKER ENGINE COULD NOT START on this machine; last lines of $LOG:"
            tail -n 20 "$LOG" >&2 || true
            kill "$!" 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
    say "dockerd $(docker version --format '{{.Server.Version}}') answers on $SOCKET"
}

# --- base image --------------------------------------------------------------
make_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "$BASE_IMAGE exists"
        return
    fi
    local rootfs=$ENGINE_DIR/rootfs
    local mirror
    # The machine's Debian mirror, from its deb822 sources or sources.list.
    mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1 || true)
    if [[ -z $mirror ]]; then
        mirror=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1 || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    say "debootstrap --variant=minbase $SUITE from $mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$ENGINE_DIR/debootstrap.log" 2>&1 \
        || {
            tail -n 20 "$ENGINE_DIR/debootstrap.log" >&2
            die "debootstrap failed"
        }
    # The machine's apt configuration, so apt-get inside builds reaches the
    # same mirror with the same settings.
    rm -rf "$rootfs/etc/apt"
    cp -a /etc/apt "$rootfs/etc/apt"
    # Like the official image: package scripts never start services during a
    # build, and no package lists or caches inside.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    say "$BASE_IMAGE imported ($(docker image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# --- stop --------------------------------------------------------------------
stop_engine() {
    if [[ ! -d $ENGINE_DIR ]]; then
        say "nothing to stop ($ENGINE_DIR does not exist)"
        return
    fi
    local pid
    if pid=$(engine_pid) && engine_answers; then
        if [[ $(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]]; then
            say "leaving the swarm"
            docker swarm leave --force >/dev/null 2>&1 || true
        fi
        local containers
        containers=$(docker ps -aq 2>/dev/null || true)
        if [[ -n $containers ]]; then
            say "removing $(wc -w <<<"$containers") containers"
            # shellcheck disable=SC2086 # one id per word
            docker rm -f $containers >/dev/null 2>&1 || true
        fi
    fi
    if pid=$(engine_pid); then
        say "stopping dockerd (pid $pid)"
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    # containerd and shims the engine started (their command lines name
    # ENGINE_DIR); matched by path, never by a bare program name.
    local leftover
    leftover=$(pgrep -f -- "$ENGINE_DIR/" || true)
    if [[ -n $leftover ]]; then
        # shellcheck disable=SC2086 # one pid per word
        kill $leftover 2>/dev/null || true
        sleep 1
        # shellcheck disable=SC2086
        kill -9 $leftover 2>/dev/null || true
    fi
    # Mounts left under the folder (network namespaces, volumes), deepest first.
    local mounts
    mounts=$(awk -v dir="$ENGINE_DIR" 'index($2, dir) == 1 {print $2}' /proc/self/mounts | sort -r || true)
    if [[ -n $mounts ]]; then
        while read -r mount; do umount -l "$mount" 2>/dev/null || true; done <<<"$mounts"
    fi
    # Links the engine created (swarm's docker_gwbridge, veth pairs, vxlan).
    if [[ -r $ENGINE_DIR/links.before ]]; then
        local link
        while read -r link; do
            [[ -z $link ]] && continue
            if ! grep -qxF "$link" "$ENGINE_DIR/links.before"; then
                say "deleting network link $link"
                ip link delete "$link" 2>/dev/null || true
            fi
        done < <(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//')
    fi
    rm -rf "$ENGINE_DIR"
    say "stopped; $ENGINE_DIR removed"
}

status() {
    if pid=$(engine_pid) && engine_answers; then
        say "dockerd $(docker version --format '{{.Server.Version}}') running, pid $pid, in $ENGINE_DIR"
        say "swarm: $(docker info --format '{{.Swarm.LocalNodeState}}')"
        docker image ls >&2
        echo "export DOCKER_HOST=$DOCKER_HOST"
    else
        say "not running"
        return 1
    fi
}

case ${1:-} in
    start)
        command -v ip >/dev/null || apt_install iproute2
        install_missing
        start_engine
        make_base_image
        echo "export DOCKER_HOST=$DOCKER_HOST"
        ;;
    stop) stop_engine ;;
    status) status ;;
    env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
