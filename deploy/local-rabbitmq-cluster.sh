#!/usr/bin/env bash
# A three-node RabbitMQ cluster of this machine's RabbitMQ installation, on
# loopback, for trying the bus on a cluster (several broker addresses,
# quorum queues, a node going away):
#
#   sudo bash deploy/local-rabbitmq-cluster.sh start   # start, cluster, print AMQP_URL
#   sudo bash deploy/local-rabbitmq-cluster.sh status  # cluster_status
#   sudo bash deploy/local-rabbitmq-cluster.sh stop    # stop the nodes, remove BASE_DIR
#
# One node N (1, 2 or 3) of a running cluster, to see the bus ride out a
# node failure (the marketplace's fault tests call these):
#
#   sudo bash deploy/local-rabbitmq-cluster.sh kill N        # SIGKILL its Erlang VM (a crash)
#   sudo bash deploy/local-rabbitmq-cluster.sh stop-node N   # graceful: rabbitmqctl stop
#   sudo bash deploy/local-rabbitmq-cluster.sh start-node N  # start it again, await it in the cluster
#   sudo bash deploy/local-rabbitmq-cluster.sh ctl N ARGS... # rabbitmqctl -n NODE ARGS...
#
# `kill` and `stop-node` return once the node's VM has exited; `start-node`
# once the node runs and the cluster sees its three nodes again (the node
# keeps its data, so it rejoins by itself).
#
# What it does, and why:
# - Starts three nodes, marketplace-1@localhost .. marketplace-3@localhost,
#   AMQP on 127.0.0.1:5681..5683, Erlang distribution on 25681..25683, with
#   `rabbitmq-server` in the background (not `-detached`, which hides
#   start-up errors; each node's console goes to BASE_DIR/nodeN/console.log).
# - Everything of a node lives under BASE_DIR/nodeN (default BASE_DIR:
#   /var/tmp/marketplace-rabbit-cluster), owned by the `rabbitmq` user the
#   server drops to: data (RABBITMQ_MNESIA_BASE), logs, pid file, feature
#   flags file, an empty enabled-plugins file (no management plugin), and
#   its own rabbitmq.conf and rabbitmq-env.conf, so that nothing of
#   /etc/rabbitmq (the system node's name, port and listeners) applies.
# - Waits for each node with `rabbitmqctl -n NODE await_startup`, joins nodes
#   2 and 3 to node 1 (stop_app, join_cluster, start_app), then enables every
#   feature flag of the new cluster. The default `guest` user (guest/guest,
#   from loopback only) is the cluster's user.
# - Never touches another node: every rabbitmqctl call names its node with
#   -n, and `stop` only stops the three nodes above. The nodes share the
#   machine's epmd and Erlang cookie (/var/lib/rabbitmq/.erlang.cookie) with
#   the system node, as any local RabbitMQ node does, but never join it.
#
# Run as root (the server and rabbitmqctl drop to the `rabbitmq` user).
# Exits non-zero, saying why, when a node cannot start.
set -euo pipefail

# Override these four to run a second cluster beside the first (e.g.
# CLUSTER_NAME=bench AMQP_BASE_PORT=5690 DIST_BASE_PORT=25690
# BASE_DIR=/var/tmp/bench-rabbit-cluster).
CLUSTER_NAME="${CLUSTER_NAME:-marketplace}"
BASE_DIR="${BASE_DIR:-/var/tmp/$CLUSTER_NAME-rabbit-cluster}"
AMQP_BASE_PORT="${AMQP_BASE_PORT:-5680}"
DIST_BASE_PORT="${DIST_BASE_PORT:-25680}"
NODES=(1 2 3)
START_TIMEOUT_S="${START_TIMEOUT_S:-120}"

node_name() { echo "$CLUSTER_NAME-$1@localhost"; }
node_dir() { echo "$BASE_DIR/node$1"; }

ctl() {
    # ctl N ARGS...: rabbitmqctl against node N only.
    local n="$1"
    shift
    rabbitmqctl -n "$(node_name "$n")" "$@"
}

die() {
    echo "local-rabbitmq-cluster: $*" >&2
    exit 1
}

check_ports_free() {
    local n port
    for n in "${NODES[@]}"; do
        for port in $((AMQP_BASE_PORT + n)) $((DIST_BASE_PORT + n)); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                die "port $port is already in use (a cluster already running? try: $0 status / stop)"
            fi
        done
    done
}

prepare_node() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    mkdir -p "$dir/mnesia" "$dir/log"
    # An empty list: no plugin, no management listener.
    echo "[]." >"$dir/enabled_plugins"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$((AMQP_BASE_PORT + n))
loopback_users.guest = true
EOF
    cat >"$dir/rabbitmq-env.conf" <<EOF
ERL_EPMD_ADDRESS=127.0.0.1
EOF
    chown -R rabbitmq:rabbitmq "$dir"
}

start_node() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    # `su` in the packaged wrapper keeps these variables.
    (
        cd "$dir"
        env \
            RABBITMQ_NODENAME="$(node_name "$n")" \
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_NODE_PORT="$((AMQP_BASE_PORT + n))" \
            RABBITMQ_DIST_PORT="$((DIST_BASE_PORT + n))" \
            RABBITMQ_MNESIA_BASE="$dir/mnesia" \
            RABBITMQ_LOG_BASE="$dir/log" \
            RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
            RABBITMQ_FEATURE_FLAGS_FILE="$dir/feature_flags" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
            RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
            RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
            RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
            ERL_EPMD_ADDRESS=127.0.0.1 \
            nohup rabbitmq-server >"$dir/console.log" 2>&1 &
        echo $! >"$dir/launcher.pid"
    )
}

await_node() {
    local n="$1" dir deadline
    dir="$(node_dir "$n")"
    deadline=$((SECONDS + START_TIMEOUT_S))
    until ctl "$n" await_startup --timeout 10 >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null; then
            tail -n 40 "$dir/console.log" >&2 || true
            die "node $(node_name "$n") exited during start-up (console: $dir/console.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$dir/console.log" >&2 || true
            die "node $(node_name "$n") not started after ${START_TIMEOUT_S}s (console: $dir/console.log)"
        fi
        sleep 1
    done
}

urls() {
    local n list=()
    for n in "${NODES[@]}"; do
        list+=("amqp://guest:guest@127.0.0.1:$((AMQP_BASE_PORT + n))/%2f")
    done
    (IFS=,; echo "${list[*]}")
}

start() {
    [ "$(id -u)" = 0 ] || die "run as root (the nodes run as the rabbitmq user)"
    command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed"
    [ ! -e "$BASE_DIR" ] || die "$BASE_DIR exists: a cluster is running or was not stopped (run: $0 stop)"
    check_ports_free
    local started=$SECONDS n
    mkdir -p "$BASE_DIR"
    chown rabbitmq:rabbitmq "$BASE_DIR"
    for n in "${NODES[@]}"; do
        prepare_node "$n"
        start_node "$n"
    done
    for n in "${NODES[@]}"; do
        await_node "$n"
        echo "node $(node_name "$n") started"
    done
    for n in 2 3; do
        ctl "$n" stop_app >/dev/null
        ctl "$n" join_cluster "$(node_name 1)" >/dev/null
        ctl "$n" start_app >/dev/null
        echo "node $(node_name "$n") joined $(node_name 1)"
    done
    ctl 1 enable_feature_flag all >/dev/null
    ctl 1 await_online_nodes 3 >/dev/null
    echo "cluster of 3 nodes started in $((SECONDS - started))s"
    echo "AMQP_URL=$(urls)"
}

stop() {
    [ "$(id -u)" = 0 ] || die "run as root"
    local n dir pid
    for n in "${NODES[@]}"; do
        dir="$(node_dir "$n")"
        [ -d "$dir" ] || continue
        if ctl "$n" stop "$dir/rabbitmq.pid" >/dev/null 2>&1; then
            echo "node $(node_name "$n") stopped"
        else
            echo "node $(node_name "$n") was not running"
        fi
        # The launcher (the packaged wrapper's su) ends with the node.
        if [ -f "$dir/launcher.pid" ]; then
            pid="$(cat "$dir/launcher.pid")"
            for _ in $(seq 1 20); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
        fi
    done
    rm -rf "$BASE_DIR"
    echo "removed $BASE_DIR"
}

status() {
    ctl 1 cluster_status
    echo "AMQP_URL=$(urls)"
}

node_arg() {
    # node_arg N: checks that N is a node of the cluster, with its directory.
    local n="${1:-}"
    case "$n" in
    1 | 2 | 3) ;;
    *) die "which node? 1, 2 or 3 (got '${n}')" ;;
    esac
    [ -d "$(node_dir "$n")" ] || die "$(node_dir "$n") does not exist: is the cluster started? (run: $0 start)"
}

await_exit() {
    # await_exit PID WHAT: waits up to 60 s for PID to exit.
    local pid="$1" what="$2"
    for _ in $(seq 1 240); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    die "$what did not exit within 60s"
}

kill_node() {
    [ "$(id -u)" = 0 ] || die "run as root"
    local n="$1" dir pid
    node_arg "$n"
    dir="$(node_dir "$n")"
    # The pid file holds the Erlang VM's (beam.smp's) pid.
    pid="$(cat "$dir/rabbitmq.pid" 2>/dev/null)" || die "no pid file in $dir: node $n is not running"
    kill -0 "$pid" 2>/dev/null || die "node $n (pid $pid) is not running"
    kill -KILL "$pid"
    await_exit "$pid" "node $(node_name "$n") (pid $pid)"
    rm -f "$dir/rabbitmq.pid"
    echo "node $(node_name "$n") killed (SIGKILL to pid $pid)"
}

stop_node() {
    [ "$(id -u)" = 0 ] || die "run as root"
    local n="$1" dir
    node_arg "$n"
    dir="$(node_dir "$n")"
    # `stop` with the pid file returns once the VM has exited.
    ctl "$n" stop "$dir/rabbitmq.pid" >/dev/null || die "node $(node_name "$n") did not stop (was it running?)"
    if [ -f "$dir/launcher.pid" ]; then
        await_exit "$(cat "$dir/launcher.pid")" "the launcher of node $n"
    fi
    echo "node $(node_name "$n") stopped"
}

start_one_node() {
    [ "$(id -u)" = 0 ] || die "run as root"
    local n="$1"
    node_arg "$n"
    if ctl "$n" ping >/dev/null 2>&1; then
        die "node $(node_name "$n") is already running"
    fi
    start_node "$n"
    await_node "$n"
    ctl "$n" await_online_nodes 3 --timeout "$START_TIMEOUT_S" >/dev/null ||
        die "node $(node_name "$n") started but the cluster does not see 3 nodes"
    echo "node $(node_name "$n") started, the cluster has its 3 nodes"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
kill) kill_node "${2:-}" ;;
stop-node) stop_node "${2:-}" ;;
start-node) start_one_node "${2:-}" ;;
ctl)
    node_arg "${2:-}"
    n="$2"
    shift 2
    ctl "$n" "$@"
    ;;
*)
    echo "usage: $0 start|stop|status | kill N|stop-node N|start-node N|ctl N ARGS..." >&2
    exit 2
    ;;
esac
