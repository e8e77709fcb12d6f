#!/usr/bin/env bash
# A throwaway PostgreSQL for the store tests: Debian's package, a cluster of our own in a temporary folder,
# listening on loopback only. Idempotent: run it again and it reuses the running cluster.
#
#   eval "$(bash .ci/postgres.sh)"    # exports CDSRULES_TEST_PG_URL
#
# Everything but the final `export` line goes to stderr, so the eval sees only that line.
set -euo pipefail

PORT="${CDSRULES_PG_PORT:-54329}"
DATA="${CDSRULES_PG_DATA:-/tmp/cdsrules-pg-$PORT}"
NAME=cdsrules
URL="postgresql+psycopg://$NAME:$NAME@127.0.0.1:$PORT/$NAME"

say() { echo "postgres.sh: $*" >&2; }

# The server binaries: Debian keeps them out of PATH, under /usr/lib/postgresql/<major>/bin.
pg_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

BIN=$(pg_bin || true)
if [ -z "$BIN" ]; then
    say "installing Debian's postgresql"
    if [ "$(id -u)" -ne 0 ]; then
        say "PostgreSQL is not installed and this is not root: apt-get install postgresql first"
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # No default cluster: we make our own below.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/cdsrules.conf
    apt-get install -y -qq postgresql >&2
    BIN=$(pg_bin)
fi

# Run the server tools as `postgres` when we are root (PostgreSQL refuses to run as root), else as ourselves.
if [ "$(id -u)" -eq 0 ]; then
    OWNER=postgres
    as_owner() { runuser -u postgres -- "$@"; }
else
    OWNER=$(id -un)
    as_owner() { "$@"; }
fi

if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    if [ ! -f "$DATA/PG_VERSION" ]; then
        say "initdb $DATA"
        rm -rf "$DATA"
        mkdir -p "$DATA"
        chown "$OWNER" "$DATA"
        chmod 700 "$DATA"
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    say "starting PostgreSQL on 127.0.0.1:$PORT"
    # Sockets in the data folder: nothing of ours touches /var/run/postgresql or the port of a system cluster.
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=200 -c fsync=on" >/dev/null
fi

psql_admin() { as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$NAME'")" != "1" ]; then
    psql_admin -c "CREATE ROLE $NAME LOGIN PASSWORD '$NAME'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$NAME'")" != "1" ]; then
    psql_admin -c "CREATE DATABASE $NAME OWNER $NAME"
fi
say "ready: $URL"
echo "export CDSRULES_TEST_PG_URL=$URL"
