#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against the `/openapi.json` the
# running app serves: every operation, every check, stateful links included.
# See README.md beside this file for what it runs, its knobs and its figures.
#
# Exits non-zero when a check fails (a 5xx, a status, content type, header
# or body the document does not describe, a schema-valid request refused, a
# schema-invalid one accepted...).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"

# schemathesis and its dependencies are pinned in requirements.txt; the
# virtualenv, outside the repository, is named after that file's digest.
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/marketplace-fuzz"
VENV="$CACHE/venv-$(sha256sum "$HERE/requirements.txt" | cut -c1-16)"
# Test cases per operation and phase; the seed makes a run repeatable
# (`FUZZ_SEED=random` draws one, printed so that it can be replayed).
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
SEED="${FUZZ_SEED:-20261130}"
if [ "$SEED" = random ]; then SEED=$RANDOM$RANDOM; fi
# `postgres://USER@HOST:PORT/DB` of a server on which the script may create
# (and then drops) a database of its own; empty to fuzz SQLite alone.
POSTGRES_URL="${FUZZ_POSTGRES_URL-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}"
# Which runs: SQLite in open mode, then PostgreSQL with authentication on
# (when the binary signs tokens; else open too).
DATABASES="${FUZZ_DATABASES:-sqlite postgres}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/marketplace-fuzz.XXXXXX")"
APP_PID=""
PG_DATABASE=""

cleanup() {
    if [ -n "$APP_PID" ]; then
        kill "$APP_PID" 2>/dev/null || true
        wait "$APP_PID" 2>/dev/null || true
    fi
    if [ -n "$PG_DATABASE" ]; then
        psql -q "$POSTGRES_URL" -c "DROP DATABASE IF EXISTS \"$PG_DATABASE\" WITH (FORCE)" \
            >/dev/null 2>&1 || echo "could not drop database $PG_DATABASE" >&2
    fi
    if [ -n "${FUZZ_REPORT_DIR:-}" ]; then
        mkdir -p "$FUZZ_REPORT_DIR"
        cp "$WORK"/*.ndjson "$WORK"/*.log "$FUZZ_REPORT_DIR"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building the marketplace binary"
# The workspace's feature set, as `cargo test --workspace --all-features`
# builds it, so that CI reuses what its tests step compiled.
(cd "$ROOT" && cargo build -q --workspace --all-features --bin marketplace)
TARGET_DIR="$(cd "$ROOT" && cargo metadata -q --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/debug/marketplace"

if [ ! -f "$VENV/installed" ]; then
    echo "installing schemathesis into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    touch "$VENV/installed"
fi
"$VENV/bin/schemathesis" --version

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Auth: when the binary can sign tokens, the API runs with a throwaway
# secret and schemathesis sends a valid token of a random user.
AUTH=no
if "$BIN" token --help >/dev/null 2>&1; then
    AUTH=yes
fi
# Limits that would only slow the fuzzer down (it sends from one address).
EXTRA_FLAGS=()
if "$BIN" serve --help 2>/dev/null | grep -q -- '--rate-limit-per-second'; then
    EXTRA_FLAGS+=(--rate-limit-per-second 0)
fi

TOTALS="$WORK/totals.json"
STATUS=0

# fuzz LABEL DATABASE_URL AUTH(yes|no)
fuzz() {
    local label="$1" database_url="$2" auth="$3"
    local port log report headers=() env=() fuzz_env=()
    port="$(free_port)"
    log="$WORK/app-$label.log"
    report="$WORK/report-$label.ndjson"
    if [ "$auth" = yes ]; then
        env+=("MARKETPLACE_AUTH_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')")
        local user token
        user="$(python3 -c 'import uuid; print(uuid.uuid4())')"
        token="$(env "${env[@]}" "$BIN" token --user "$user")" || return 1
        headers=(-H "Authorization: Bearer $token")
        fuzz_env+=("SCHEMATHESIS_HOOKS=$HERE/hooks.py" "FUZZ_AUTH_USER=$user")
    fi

    echo
    echo "=== $label: marketplace serve on 127.0.0.1:$port (auth: $auth)"
    env "${env[@]}" RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve \
        --listen "127.0.0.1:$port" --database-url "$database_url" --bus in-memory-async \
        "${EXTRA_FLAGS[@]}" >"$log" 2>&1 &
    APP_PID=$!
    local ready=no
    for _ in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then
            ready=yes
            break
        fi
        if ! kill -0 "$APP_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if [ "$ready" != yes ]; then
        echo "the app did not become ready; its log:" >&2
        cat "$log" >&2
        kill "$APP_PID" 2>/dev/null || true
        wait "$APP_PID" 2>/dev/null || true
        APP_PID=""
        return 1
    fi

    local rc=0
    (cd "$WORK" && env "${fuzz_env[@]}" "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --continue-on-failure \
        --generation-database none \
        --request-timeout 15 \
        --no-color \
        --report ndjson --report-ndjson-path "$report" \
        "${headers[@]}") || rc=$?

    kill "$APP_PID" 2>/dev/null || true
    wait "$APP_PID" 2>/dev/null || true
    APP_PID=""

    python3 "$HERE/summary.py" "$report" "$label (auth: $auth)" "$TOTALS" || rc=1
    if grep -q "panicked" "$log"; then
        echo "the app panicked; its log:" >&2
        grep -B2 -A10 "panicked" "$log" >&2
        rc=1
    fi
    return "$rc"
}

if [[ " $DATABASES " == *" sqlite "* ]]; then
    fuzz sqlite "sqlite://$WORK/fuzz.db" no || STATUS=1
fi

if [[ " $DATABASES " == *" postgres "* ]] && [ -n "$POSTGRES_URL" ]; then
    if pg_isready -q -d "$POSTGRES_URL" 2>/dev/null; then
        PG_DATABASE="marketplace_fuzz_$$_$RANDOM"
        # The app creates the database; cleanup drops it.
        fuzz postgres "${POSTGRES_URL%/*}/$PG_DATABASE" "$AUTH" || STATUS=1
    else
        echo
        echo "=== postgres: $POSTGRES_URL does not answer; skipped"
    fi
fi

echo
[ -f "$TOTALS" ] || { echo "no run completed" >&2; exit 1; }
python3 - "$TOTALS" "$SEED" "$MAX_EXAMPLES" <<'EOF'
import json, sys
totals = json.load(open(sys.argv[1]))
print(f"schemathesis: {totals['runs']} runs, seed {sys.argv[2]}, up to {sys.argv[3]} examples per operation and phase")
print(f"{totals['cases']} test cases, {totals['requests']} requests, "
      f"{totals['server_errors']} server errors, {totals['failures']} failed checks, {totals['errors']} errors")
EOF
if [ "$STATUS" -ne 0 ]; then
    echo "API fuzzing FAILED (seed $SEED: FUZZ_SEED=$SEED $0 replays it)"
fi
exit "$STATUS"
