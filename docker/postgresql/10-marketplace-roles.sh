#!/bin/sh
# The marketplace's database roles, least privilege (deploy/README.md,
# "Least privilege"):
#
#   MARKETPLACE_MIGRATOR_ROLE (marketplace_migrator)  owns the database, its
#       `public` schema and every object in it; `marketplace migrate` runs as
#       this role. No superuser, no CREATEDB, no CREATEROLE.
#   MARKETPLACE_APP_ROLE (marketplace_app)  what `serve` and `worker` connect
#       as: CONNECT on the database, USAGE on the schema, SELECT, INSERT,
#       UPDATE, DELETE on its tables, USAGE on its sequences, EXECUTE on its
#       functions. No DDL (it owns nothing and may not create in the schema),
#       no TRUNCATE, no TEMP tables. Tables, sequences and functions that later
#       migrations create get the same grants (ALTER DEFAULT PRIVILEGES FOR
#       ROLE the migrator).
#
# Passwords: MARKETPLACE_MIGRATOR_PASSWORD and MARKETPLACE_APP_PASSWORD, or
# the files MARKETPLACE_MIGRATOR_PASSWORD_FILE / MARKETPLACE_APP_PASSWORD_FILE
# name (docker secrets). They reach psql through its environment (\getenv),
# never its command line.
#
# Run by the postgres image on first start (mounted in
# /docker-entrypoint-initdb.d/), as POSTGRES_USER on the local socket, in
# POSTGRES_DB. Idempotent: on a database initialised before these roles
# existed, run it by hand in the container
# (`sh /docker-entrypoint-initdb.d/10-marketplace-roles.sh`): it creates the
# roles, sets their passwords, and hands the objects already in `public`
# over to the migration role.
set -eu

# read_secret NAME: NAME's value, or the content of the file NAME_FILE names.
read_secret() {
    eval "value=\${$1:-}"
    eval "file=\${$1_FILE:-}"
    if [ -n "$file" ]; then
        if [ -n "$value" ]; then
            echo "marketplace roles: both $1 and $1_FILE are set" >&2
            exit 1
        fi
        value=$(cat "$file")
    fi
    if [ -z "$value" ]; then
        echo "marketplace roles: $1 (or $1_FILE) is needed" >&2
        exit 1
    fi
    printf '%s' "$value"
}

MARKETPLACE_MIGRATOR_PASSWORD=$(read_secret MARKETPLACE_MIGRATOR_PASSWORD)
MARKETPLACE_APP_PASSWORD=$(read_secret MARKETPLACE_APP_PASSWORD)
export MARKETPLACE_MIGRATOR_PASSWORD MARKETPLACE_APP_PASSWORD
unset MARKETPLACE_MIGRATOR_PASSWORD_FILE MARKETPLACE_APP_PASSWORD_FILE

psql -v ON_ERROR_STOP=1 -q -X \
    --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
    -v migrator="${MARKETPLACE_MIGRATOR_ROLE:-marketplace_migrator}" \
    -v app="${MARKETPLACE_APP_ROLE:-marketplace_app}" <<'SQL'
\getenv migrator_password MARKETPLACE_MIGRATOR_PASSWORD
\getenv app_password MARKETPLACE_APP_PASSWORD
SELECT current_database() AS db \gset

SELECT format('CREATE ROLE %I LOGIN', :'migrator')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'migrator') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"migrator" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'migrator_password';
ALTER ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_password';

-- The database and its schema belong to the migration role; nobody else
-- may connect, or create anything, unless granted here.
ALTER DATABASE :"db" OWNER TO :"migrator";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app";
ALTER SCHEMA public OWNER TO :"migrator";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";

-- Objects made before these roles existed (an older deployment, where the
-- application migrated as the superuser) change hands.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'migrator')
  FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'migrator' \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'migrator')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> :'migrator' \gexec

-- Rows only, on what exists and on what later migrations create.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO :"app";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT USAGE ON SEQUENCES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO :"app";
SQL

echo "marketplace roles: ${MARKETPLACE_MIGRATOR_ROLE:-marketplace_migrator} owns ${POSTGRES_DB:-the database}, ${MARKETPLACE_APP_ROLE:-marketplace_app} reads and writes its rows" >&2
