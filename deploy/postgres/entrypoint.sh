#!/usr/bin/env bash
# First start: a cluster whose super user POSTGRES_USER (default postgres) has POSTGRES_PASSWORD (SCRAM over
# the network), and the database POSTGRES_DB; every start: the server on all addresses of the container.
# The same variables as the official postgres image, so that either serves. Unlike it, a later start gives
# the super user POSTGRES_PASSWORD again: a new password in a project's .env works on the data it had.
set -euo pipefail
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    database=${POSTGRES_DB:-$user}
    if [ "$database" != postgres ]; then
        echo "CREATE DATABASE \"$database\";" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
else
    quoted=${POSTGRES_PASSWORD//\'/\'\'}
    echo "ALTER ROLE \"$user\" PASSWORD '$quoted';" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"
