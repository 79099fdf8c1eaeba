#!/usr/bin/env bash
# Serves examples/nginx/demo.conf in the foreground on 127.0.0.1:$PORT.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-8080}
prefix=$repo/build/demo

mkdir -p "$prefix/logs"
sed -e "s|@REPO@|$repo|g" -e "s|@PORT@|$port|g" \
    "$repo/examples/nginx/demo.conf" > "$prefix/nginx.conf"

echo "demo on http://127.0.0.1:$port/ (error log: $prefix/logs/error.log);" \
     "Ctrl-C stops it"
exec nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log"
