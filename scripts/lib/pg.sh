# shellcheck shell=bash
# The PostgreSQL server for tests and benchmarks: a throwaway cluster under
# ROOT/target/peers/pg (trust auth, 127.0.0.1 on a free port, fsync off),
# from the distribution's PostgreSQL (15 in the CI image; installed with
# apt-get only when initdb is missing). Sourced by scripts/test and
# bench/cluster.
#
#   pg_start ROOT   initialises and starts the cluster, exports
#                   TENAX_TEST_DATABASE_URL (postgres://postgres@127.0.0.1:PORT/postgres),
#                   TENAX_TEST_PG=1, and PG_DIR / PG_PORT / PG_BIN
#   pg_stop         stops it (fast shutdown) and removes its directory
#
# postgres refuses to run as root: as root, initdb and pg_ctl run as the
# `postgres` user (through su) in a directory it owns.

# Runs a command line as the cluster's owner.
_pg_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        su postgres -s /bin/sh -c "$1"
    else
        sh -c "$1"
    fi
}

_pg_bindir() {
    local bindir
    bindir=$(pg_config --bindir 2>/dev/null || true)
    if [[ ! -x "$bindir/initdb" ]]; then
        # Debian keeps the server binaries out of PATH: look there too.
        bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    if [[ ! -x "$bindir/initdb" ]]; then
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        echo "pg: initdb missing; installing postgresql with apt-get" >&2
        "${sudo[@]}" apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q postgresql >&2
        bindir=$(pg_config --bindir)
    fi
    echo "$bindir"
}

pg_start() {
    local root=$1 attempt port started=$SECONDS
    PG_BIN=$(_pg_bindir)
    PG_DIR="$root/target/peers/pg"
    # A cluster left by a killed run: stop it if it still runs, then start afresh.
    if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
        _pg_as_owner "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m immediate stop" >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres:postgres "$PG_DIR"
        # postgres must reach its directory through the tree; when a parent
        # is closed to others, use a directory under /tmp instead.
        if ! su postgres -s /bin/sh -c "test -w '$PG_DIR'"; then
            rm -rf "$PG_DIR"
            PG_DIR=$(mktemp -d /tmp/tenax-pg.XXXXXX)
            chown postgres:postgres "$PG_DIR"
        fi
    fi
    if ! _pg_as_owner "'$PG_BIN/initdb' -D '$PG_DIR/data' -A trust -U postgres --no-sync" \
        >"$PG_DIR/initdb.log" 2>&1; then
        echo "pg: initdb failed; see $PG_DIR/initdb.log" >&2
        cat "$PG_DIR/initdb.log" >&2
        return 1
    fi
    for attempt in 1 2 3 4 5; do
        port=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
        # -w waits until it accepts connections; a taken port fails the start.
        if _pg_as_owner "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/log' -w -t 30 \
            -o \"-p $port -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200\" start" \
            >>"$PG_DIR/pg_ctl.log" 2>&1; then
            PG_PORT=$port
            export PG_DIR PG_PORT PG_BIN
            export TENAX_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
            export TENAX_TEST_PG=1
            echo "pg: PostgreSQL at 127.0.0.1:$PG_PORT ($PG_DIR, attempt $attempt, $((SECONDS - started)) s)"
            return 0
        fi
        _pg_as_owner "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m immediate stop" >/dev/null 2>&1 || true
    done
    echo "pg: PostgreSQL did not start; see $PG_DIR/log" >&2
    tail -n 20 "$PG_DIR/log" >&2 2>/dev/null || true
    return 1
}

pg_stop() {
    if [[ -n "${PG_DIR:-}" && -f "$PG_DIR/data/postmaster.pid" ]]; then
        _pg_as_owner "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m fast stop" >/dev/null 2>&1 || true
    fi
    if [[ -n "${PG_DIR:-}" ]]; then
        rm -rf "$PG_DIR"
        PG_DIR=
    fi
}
