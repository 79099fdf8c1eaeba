#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Serves examples/nginx/demo.conf in the foreground on 127.0.0.1:$PORT,
# with an etcd on 127.0.0.1:$ETCD_PORT (its peers: $ETCD_PEER_PORT, by
# default the next port) for the Go etcd example and a
# PostgreSQL on 127.0.0.1:$PG_PORT for the Java JDBC example, and the
# Rust example's gRPC server (build/nffi-grpc-server) on 127.0.0.1:$GRPC_PORT.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-8080}
etcd_port=${ETCD_PORT:-2379}
pg_port=${PG_PORT:-5432}
grpc_port=${GRPC_PORT:-50051}
pg_user=$(id -un)
# PostgreSQL refuses to run as root: then it runs as postgres
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    pg_user=postgres
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
prefix=$repo/build/demo

# workers run as nobody: a checkout in a private folder (under /root, say)
# is out of their reach, so they run as the user who started the demo
user=
dir=$repo
while [ "$dir" != / ]; do
    if [ $(( 0$(stat -c %a "$dir") & 1 )) -eq 0 ]; then
        user="user $(id -un);"
        break
    fi
    dir=$(dirname "$dir")
done

mkdir -p "$prefix/logs"
sed -e "s|@REPO@|$repo|g" -e "s|@PORT@|$port|g" \
    -e "s|@ETCD_PORT@|$etcd_port|g" -e "s|^# @USER@$|$user|" \
    -e "s|@PG_PORT@|$pg_port|g" -e "s|@PG_USER@|$pg_user|g" \
    -e "s|@GRPC_PORT@|$grpc_port|g" \
    "$repo/examples/nginx/demo.conf" > "$prefix/nginx.conf"

etcd_pid=
pg_pid=
pg_dir=
grpc_pid=
stop() {
    [ -z "$grpc_pid" ] || { kill "$grpc_pid" 2>/dev/null; wait "$grpc_pid"; } || true
    [ -z "$etcd_pid" ] || { kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid"; } || true
    # INT: PostgreSQL's fast shutdown, which does not wait for clients
    [ -z "$pg_pid" ] || { kill -INT "$pg_pid" 2>/dev/null; wait "$pg_pid"; } || true
    [ -z "$pg_dir" ] || rm -rf "$pg_dir"
}
trap stop EXIT

if command -v etcd >/dev/null; then
    peer=http://127.0.0.1:${ETCD_PEER_PORT:-$((etcd_port + 1))}
    etcd --name demo --data-dir "$prefix/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "demo=$peer" --initial-cluster-state new \
        --logger zap --log-outputs "$prefix/logs/etcd.log" &
    etcd_pid=$!
else
    echo "etcd is not installed (make deps): the /go/etcd/ locations fail"
fi

if [ -x "$repo/build/nffi-grpc-server" ]; then
    "$repo/build/nffi-grpc-server" "127.0.0.1:$grpc_port" \
        >"$prefix/logs/grpc-server.log" 2>&1 &
    grpc_pid=$!
else
    echo "build/nffi-grpc-server is missing (make rust): the /rust/grpc/" \
         "locations fail"
fi

# a throwaway cluster under /tmp (its user must reach it), trust on 127.0.0.1
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ]; then
    pg_dir=$(mktemp -d /tmp/nffi-demo-postgres-XXXXXX)
    [ ${#as_pg[@]} -eq 0 ] || chown postgres: "$pg_dir"
    if "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -E UTF8 \
            --no-sync --no-instructions >"$prefix/logs/initdb.log" 2>&1; then
        "${as_pg[@]}" "$pg_bin/postgres" -D "$pg_dir/data" -p "$pg_port" \
            -k "$pg_dir" -c listen_addresses=127.0.0.1 -c fsync=off \
            >"$prefix/logs/postgres.log" 2>&1 &
        pg_pid=$!
    else
        echo "initdb failed ($prefix/logs/initdb.log): the /java/jdbc/" \
             "locations fail"
    fi
else
    echo "PostgreSQL is not installed (make deps): the /java/jdbc/" \
         "locations fail"
fi

echo "demo on http://127.0.0.1:$port/ (error log: $prefix/logs/error.log);" \
     "Ctrl-C stops it"
nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" &
nginx_pid=$!
# a signal to this script (Ctrl-C, TERM) reaches nginx too.  bash cannot
# trap a signal that was ignored when it started (QUIT and INT are, for what
# a background script starts), but nginx sets its own handlers: stop it with
# kill -QUIT "$(cat build/demo/logs/nginx.pid)", and this script ends and
# stops etcd
trap 'kill -QUIT $nginx_pid 2>/dev/null || true' INT TERM QUIT
wait $nginx_pid || wait $nginx_pid
