#!/usr/bin/env bash
# The deployment, for real, on this machine: a throwaway Docker engine, the
# images, docker-compose.yml, then stack.yml on a one-node swarm with a
# rolling update, an automatic rollback and worker scaling. Everything it
# makes lives in one temporary folder and is removed at the end, whatever
# happens (trap).
#
#   bash deploy/ci-deploy-test.sh
#
# Phases (each timed; a summary closes the run):
#   engine    deploy/local-engine.sh start (fails loudly if no engine starts)
#   images    deploy/build-local-images.sh: the app around the release binary
#             ($CARGO_TARGET_DIR/release/marketplace, built if missing), the
#             Debian-based PostgreSQL, RabbitMQ and proxy images; then two
#             more tags of the app: `next` (an update) and `broken` (exits at
#             once)
#   compose   docker-compose.yml + deploy/compose.local.yml: migrate completed,
#             every healthcheck healthy, least privilege in place (containers
#             read-only without capabilities, tables owned by the migration
#             role, the app role refused DDL, no RabbitMQ guest), the mobile
#             flow against the API container with signed-in users
#   cluster   the same with the `cluster` profile and docker-compose.cluster.yml
#             (+ deploy/compose.cluster.local.yml): three RabbitMQ nodes in one
#             cluster, every queue a quorum queue with three members, the
#             mobile flow; one node stopped: the flow still passes; the node
#             started again rejoins
#   stack     stack.yml + deploy/stack.local.yml: secrets, migrate completed,
#             2 api + 2 worker replicas, the mobile flow through the proxy; `service update` to
#             `next` under a polling client (no failed request); `service
#             update` to `broken` rolled back automatically; workers scaled
#             1 -> 3 while offers flow, every accepted offer applied
#   teardown  stack, swarm, engine, temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d "${TMPDIR:-/tmp}/marketplace-deploy-test.XXXXXX")
# An engine already running in ENGINE_DIR (deploy/local-engine.sh start) is
# used and left running; otherwise the script starts its own and stops it.
own_engine=yes
if [[ -n ${ENGINE_DIR:-} ]] && bash deploy/local-engine.sh status >/dev/null 2>&1; then
    own_engine=no
else
    export ENGINE_DIR=$WORK/engine
fi
export DOCKER_HOST=unix://$ENGINE_DIR/docker.sock
export DOCKER_BUILDKIT=0
export DEADLINE=${DEADLINE:-90}
PROJECT=marketplace-ci
STACK=marketplace
API=http://127.0.0.1:8080
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -p "$PROJECT" -f docker-compose.yml -f deploy/compose.local.yml)
else
    # Debian bookworm's docker-compose 1.29 predates the top-level `name:`
    # (the project name comes from -p anyway) and refuses published ports
    # on the host's network (Compose v2 ignores them): it reads a copy
    # without those.
    awk '/^name:/ {next} /^    ports:/ {skip = 1; next} skip && /^      / {next} {skip = 0; print}' \
        docker-compose.yml >"$WORK/docker-compose.yml"
    COMPOSE=(docker-compose --project-directory . -p "$PROJECT" -f "$WORK/docker-compose.yml" -f deploy/compose.local.yml)
fi
SMOKE=(python3 deploy/smoke.py)
SUMMARY=$WORK/summary

log() { printf '[deploy-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
note() { printf '%s\n' "$*" >>"$SUMMARY"; log "$*"; }
fail() {
    log "FAILED: $*"
    exit 1
}

phase_start=$SECONDS
phase_name=""
phase() {
    if [[ -n $phase_name ]]; then
        note "phase $phase_name: $((SECONDS - phase_start))s"
    fi
    phase_name=$1
    phase_start=$SECONDS
    [[ -n $phase_name ]] && log "--- $phase_name"
    return 0
}

teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ $rc -ne 0 && -S $ENGINE_DIR/docker.sock ]]; then
        log "failure context: containers and the last log lines of each"
        docker ps -a --format '{{.Names}} {{.Image}} {{.Status}}' 2>/dev/null
        for id in $(docker ps -aq 2>/dev/null | head -n 12); do
            echo "== $(docker inspect --format '{{.Name}}' "$id" 2>/dev/null)"
            docker logs --tail 15 "$id" 2>&1
        done
        docker service ls 2>/dev/null
    fi
    phase teardown
    # An engine of this run goes whole (containers, volumes, swarm): only a
    # reused one is cleaned service by service.
    if [[ $own_engine == no && -S $ENGINE_DIR/docker.sock ]]; then
        docker stack rm "$STACK" >/dev/null 2>&1
        "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
        "${COMPOSE[@]}" -f docker-compose.cluster.yml -f deploy/compose.cluster.local.yml --profile cluster \
            down -v --remove-orphans >/dev/null 2>&1
        # The stack's volumes go once its containers are gone, so that a
        # next run on the same engine starts from empty databases.
        local deadline=$((SECONDS + 90))
        while [[ -n $(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null) ]] \
            && ((SECONDS < deadline)); do
            sleep 1
        done
        docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null \
            | xargs -r docker volume rm >/dev/null 2>&1
    fi
    if [[ $own_engine == yes ]]; then
        bash deploy/local-engine.sh stop
    else
        docker swarm leave --force >/dev/null 2>&1
        log "engine in $ENGINE_DIR left running (it was running before)"
    fi
    phase ""
    log "summary"
    cat "$SUMMARY" 2>/dev/null
    rm -rf "$WORK"
    if [[ $rc -eq 0 ]]; then
        log "PASSED: image, compose, RabbitMQ cluster, swarm stack, rolling update, rollback, scaling"
    else
        log "FAILED (exit $rc)"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# wait_until WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_until() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "$what: not within ${limit}s"
        sleep 1
    done
}

# --- engine ------------------------------------------------------------------
phase engine
if [[ $own_engine == no ]]; then
    log "using the engine already running in $ENGINE_DIR"
elif ! bash deploy/local-engine.sh start; then
    fail "the Docker engine could not start on this machine: the deployment is NOT tested"
fi

# --- images ------------------------------------------------------------------
phase images
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
bash deploy/build-local-images.sh all | tee -a "$SUMMARY"
# An update: the same binary, another tag and label. A broken release: a
# process that exits at once.
printf 'FROM marketplace:local\nLABEL org.opencontainers.image.version=next\n' \
    | docker build -q -t marketplace:next - >/dev/null
printf 'FROM marketplace:local\nENTRYPOINT ["sh", "-c", "echo this release exits at once >&2; exit 1"]\n' \
    | docker build -q -t marketplace:broken - >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | sort

# --- compose -----------------------------------------------------------------
phase compose
export MARKETPLACE_IMAGE=marketplace:local
compose_started=$SECONDS
"${COMPOSE[@]}" up -d --no-build
# compose_id SERVICE: the container of a compose service.
compose_id() { "${COMPOSE[@]}" ps -q "$1"; }
all_healthy() {
    local service id
    id=$(compose_id migrate)
    [[ -n $id && $(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$id") == "exited 0" ]] || return 1
    for service in postgresql rabbitmq api worker; do
        id=$(compose_id "$service")
        [[ -n $id && $(docker inspect --format '{{.State.Health.Status}}' "$id") == healthy ]] || return 1
    done
}
wait_until "compose: migrate completed, the four services healthy" 240 all_healthy
note "compose: migrate completed; postgresql, rabbitmq, api, worker healthy $((SECONDS - compose_started))s after up"

# Least privilege, as deployed (deploy/README.md, "Least privilege").
for service in postgresql rabbitmq migrate api worker; do
    hardening=$(docker inspect --format '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}' "$(compose_id "$service")")
    [[ $hardening == "true [ALL] "*no-new-privileges* ]] \
        || fail "compose: $service is not read-only without capabilities and no-new-privileges ($hardening)"
done
pg=$(compose_id postgresql)
owners=$(docker exec "$pg" psql -U postgres -d marketplace -Atc \
    "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'")
[[ $owners == marketplace_migrator ]] || fail "compose: tables owned by $owners, not marketplace_migrator"
app_url="postgresql://marketplace_app:${POSTGRES_APP_PASSWORD:-marketplace-app}@127.0.0.1:55432/marketplace"
ddl=$(docker exec "$pg" psql "$app_url" -c 'CREATE TABLE intruder (id int)' 2>&1 || true)
[[ $ddl == *"permission denied"* ]] || fail "compose: the app role was not refused CREATE TABLE: $ddl"
ddl=$(docker exec "$pg" psql "$app_url" -c 'DROP TABLE books' 2>&1 || true)
[[ $ddl == *"must be owner"* ]] || fail "compose: the app role was not refused DROP TABLE: $ddl"
# (`list_users` prints a `user tags` header line even with -q.)
users=$(docker exec "$(compose_id rabbitmq)" rabbitmqctl -q list_users | awk '$1 != "user" {print $1}' | sort | tr '\n' ' ')
[[ $users == "admin marketplace-api marketplace-worker " ]] || fail "compose: RabbitMQ users are: $users"
note "compose: every container read-only, no capability, no-new-privileges; tables owned by marketplace_migrator; marketplace_app refused CREATE and DROP; RabbitMQ users: $users(no guest)"
"${SMOKE[@]}" flow "$API" | tee -a "$SUMMARY"
"${COMPOSE[@]}" down -v
wait_until "compose: the API port released" 60 bash -c "! python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)'"

# --- cluster -----------------------------------------------------------------
# deploy/README.md, "Three-node RabbitMQ cluster".
phase cluster
CLUSTER=("${COMPOSE[@]}" -f docker-compose.cluster.yml -f deploy/compose.cluster.local.yml --profile cluster)
cluster_started=$SECONDS
"${CLUSTER[@]}" up -d --no-build
cluster_id() { "${CLUSTER[@]}" ps -q "$1"; }
cluster_healthy() {
    local service id
    id=$(cluster_id migrate)
    [[ -n $id && $(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$id") == "exited 0" ]] || return 1
    for service in postgresql rabbitmq-1 rabbitmq-2 rabbitmq-3 api worker; do
        id=$(cluster_id "$service")
        [[ -n $id && $(docker inspect --format '{{.State.Health.Status}}' "$id") == healthy ]] || return 1
    done
}
wait_until "cluster: migrate completed, three RabbitMQ nodes, api and worker healthy" 240 cluster_healthy
note "cluster: three RabbitMQ nodes, api and worker healthy $((SECONDS - cluster_started))s after up"
for service in rabbitmq-1 rabbitmq-2 rabbitmq-3; do
    hardening=$(docker inspect --format '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}' "$(cluster_id "$service")")
    [[ $hardening == "true [ALL] "*no-new-privileges* ]] \
        || fail "cluster: $service is not read-only without capabilities and no-new-privileges ($hardening)"
done
# running_nodes NODE: the nodes NODE's container sees running, sorted.
running_nodes() {
    docker exec "$(cluster_id "$1")" rabbitmqctl -q cluster_status --formatter json \
        | python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin)["running_nodes"])))'
}
nodes=$(running_nodes rabbitmq-1)
[[ $nodes == "rabbit-1@localhost rabbit-2@localhost rabbit-3@localhost" ]] || fail "cluster: running nodes: $nodes"
"${SMOKE[@]}" flow "$API" | tee -a "$SUMMARY"
# Every queue of the app: quorum, a member on each node.
queues=$(docker exec "$(cluster_id rabbitmq-1)" rabbitmqctl -q list_queues -p marketplace --formatter json name type members \
    | python3 -c '
import json, sys
queues = json.load(sys.stdin)
bad = [q["name"] for q in queues if q["type"] != "quorum" or len(q["members"]) != 3]
print(f"{len(queues)} {len(bad)}")')
read -r total wrong <<<"$queues"
[[ $total -gt 0 && $wrong -eq 0 ]] || fail "cluster: $wrong of $total queues are not quorum queues with three members"
note "cluster: nodes $nodes running; $total queues, every one a quorum queue with a member on each node"
# A node goes away: the app moves to the others, the queues it led elect
# new leaders, the flow passes; started again, it rejoins.
docker stop "$(cluster_id rabbitmq-2)" >/dev/null
"${SMOKE[@]}" flow "$API" | tee -a "$SUMMARY"
rejoin_started=$SECONDS
docker start "$(cluster_id rabbitmq-2)" >/dev/null
wait_until "cluster: rabbitmq-2 back in the cluster" 120 bash -c \
    "[[ \$(docker inspect --format '{{.State.Health.Status}}' $(cluster_id rabbitmq-2)) == healthy ]]"
nodes=$(running_nodes rabbitmq-2)
[[ $nodes == "rabbit-1@localhost rabbit-2@localhost rabbit-3@localhost" ]] || fail "cluster: after the restart, running nodes: $nodes"
note "cluster: rabbitmq-2 stopped, the flow passed on the two others; started again, back in the cluster $((SECONDS - rejoin_started))s later"
"${CLUSTER[@]}" down -v
wait_until "cluster: the API port released" 60 bash -c "! python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)'"

# --- stack -------------------------------------------------------------------
phase stack
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
node=$(docker node ls -q)
docker node update --label-add marketplace.db=true --label-add marketplace.broker=true "$node" >/dev/null
# Every password generated by the script; the token key chosen here, so the
# smoke client signs with it.
MARKETPLACE_AUTH_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export MARKETPLACE_AUTH_SECRET
POSTGRES_ADDRESS=127.0.0.1:55432 RABBITMQ_ADDRESS=127.0.0.1:55672 \
    bash deploy/create-secrets.sh </dev/null
export MARKETPLACE_API_PUBLISH_MODE=host MARKETPLACE_API_PORT=0
stack_started=$SECONDS
docker stack deploy --resolve-image never -c stack.yml -c deploy/stack.local.yml "$STACK"

# replicas SERVICE: "running healthy" counts of its tasks' containers.
healthy_tasks() {
    local service=$1 count=0 id
    for id in $(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$service"); do
        [[ $(docker inspect --format '{{.State.Health.Status}}' "$id") == healthy ]] && count=$((count + 1))
    done
    echo "$count"
}
migrate_completed() {
    # A task that failed (PostgreSQL not up yet) is followed by another.
    [[ $(docker service ps --format '{{.CurrentState}}' "${STACK}_migrate") == *Complete* ]]
}
stack_ready() {
    migrate_completed || return 1
    [[ $(healthy_tasks postgresql) -ge 1 && $(healthy_tasks rabbitmq) -ge 1 ]] || return 1
    [[ $(healthy_tasks api) -eq 2 && $(healthy_tasks worker) -eq 2 ]] || return 1
    curl -fsS -o /dev/null "$API/health/ready"
}
wait_until "stack: migrate completed, 2 api and 2 worker tasks healthy behind the proxy" 300 stack_ready
note "stack: migrate completed; postgresql, rabbitmq, 2 api, 2 worker healthy $((SECONDS - stack_started))s after deploy"
# The secrets arrive as files: no URL in any app task's environment.
for service in api worker; do
    env=$(docker service inspect --format '{{json .Spec.TaskTemplate.ContainerSpec.Env}}' "${STACK}_$service")
    [[ $env == *DATABASE_URL_FILE=/run/secrets/app_database_url* && $env != *postgres://* ]] \
        || fail "stack: $service does not read its database URL from a secret file"
done
note "stack: api and worker read DATABASE_URL and AMQP_URL through *_FILE secrets (app role, their own RabbitMQ user)"
"${SMOKE[@]}" flow "$API" | tee -a "$SUMMARY"

# Rolling update under a polling client.
stop=$WORK/stop-poll
"${SMOKE[@]}" poll "$API" "$stop" >"$WORK/poll-update" 2>&1 &
poller=$!
wait_until "poller: polling" 60 grep -q '^poll: started' "$WORK/poll-update"
# Sampled every second: how many api tasks run (3 = a new one beside the two).
(while [[ ! -e $stop ]]; do healthy_tasks api; sleep 1; done) >"$WORK/api-tasks" 2>/dev/null &
sampler=$!
update_started=$SECONDS
docker service update --quiet --no-resolve-image --image marketplace:next "${STACK}_api" >/dev/null
update_state() { docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "${STACK}_api"; }
# The CLI returns once the tasks converged; the update completes after the
# last task's monitor period.
wait_until "update: completed" 180 bash -c "[[ \$(docker service inspect --format '{{.UpdateStatus.State}}' ${STACK}_api) == completed ]]"
update_seconds=$((SECONDS - update_started))
touch "$stop"
poll_rc=0
wait "$poller" || poll_rc=$?
wait "$sampler" || true
cat "$WORK/poll-update"
image=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_api")
state=$(update_state)
[[ $image == marketplace:next* && $state == completed ]] || fail "update: image $image, state $state"
max_tasks=$(sort -n "$WORK/api-tasks" | tail -n 1)
min_tasks=$(sort -n "$WORK/api-tasks" | head -n 1)
note "update: api -> marketplace:next in ${update_seconds}s, healthy api tasks between $min_tasks and $max_tasks (start-first, one at a time)"
note "update: $(grep '^poll: .* served' "$WORK/poll-update")"
[[ $poll_rc -eq 0 ]] || fail "update: the polling client saw failed requests"

# A release whose process exits at once: rolled back automatically.
rm -f "$stop"
"${SMOKE[@]}" poll "$API" "$stop" >"$WORK/poll-rollback" 2>&1 &
poller=$!
rollback_started=$SECONDS
docker service update --quiet --no-resolve-image --image marketplace:broken "${STACK}_api" >"$WORK/rollback-cli" 2>&1 || true
rolled_back() { [[ $(update_state) == rollback_completed ]]; }
wait_until "rollback: api back on its previous image" 180 rolled_back
rollback_seconds=$((SECONDS - rollback_started))
touch "$stop"
poll_rc=0
wait "$poller" || poll_rc=$?
image=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_api")
message=$(docker service inspect --format '{{.UpdateStatus.Message}}' "${STACK}_api")
[[ $image == marketplace:next* ]] || fail "rollback: api runs $image"
broken_tasks=$(docker service ps --no-trunc --format '{{.Image}} {{.Error}}' "${STACK}_api" | grep -c '^marketplace:broken.*non-zero exit' || true)
note "rollback: api -> marketplace:broken rolled back to marketplace:next in ${rollback_seconds}s (\"$message\"; $broken_tasks broken task(s) started, exited non-zero)"
note "rollback: $(grep '^poll: .* served' "$WORK/poll-rollback")"
[[ $poll_rc -eq 0 ]] || fail "rollback: the polling client saw failed requests"
wait_until "rollback: 2 healthy api tasks" 120 bash -c "[[ \$(docker ps -q --filter label=com.docker.swarm.service.name=${STACK}_api --filter health=healthy | wc -l) -eq 2 ]]"

# Workers scaled down then up while offers are accepted: none lost.
consumers() {
    local broker
    broker=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_rabbitmq" | head -n 1)
    docker exec "$broker" rabbitmqctl -q list_queues -p marketplace name consumers 2>/dev/null \
        | awk '$2 > 0 {sum += $2; queues++} END {printf "%d consumers on %d queues", sum, queues}'
}
note "scale: 2 workers: $(consumers)"
docker service scale --detach "${STACK}_worker=1" >/dev/null
wait_until "scale: 1 worker" 90 bash -c "[[ \$(docker ps -q --filter label=com.docker.swarm.service.name=${STACK}_worker | wc -l) -eq 1 ]]"
note "scale: 1 worker: $(consumers)"
"${SMOKE[@]}" offers "$API" 300 "$WORK/offers.json" | tee -a "$SUMMARY" &
sender=$!
docker service scale --detach "${STACK}_worker=3" >/dev/null
wait "$sender" || fail "scale: offers refused while scaling"
wait_until "scale: 3 healthy workers" 120 bash -c "[[ \$(docker ps -q --filter label=com.docker.swarm.service.name=${STACK}_worker --filter health=healthy | wc -l) -eq 3 ]]"
note "scale: 3 workers: $(consumers)"
"${SMOKE[@]}" applied "$API" "$WORK/offers.json" | tee -a "$SUMMARY"
