#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Installs the Debian packages that building, running and testing need,
# only when they are missing: stock nginx with lua-nginx-module, the nginx
# build tree and build dependencies, Debian's CPython for the Python loader,
# the services the examples talk to (redis, etcd), load generator, memory
# checker, strace for the benchmark's breakdown, clang for libFuzzer.  The language packages
# come from each part's own deps target (Makefile `deps`).
set -euo pipefail

packages=(
    nginx libnginx-mod-http-lua lua-resty-core nginx-dev
    build-essential libpcre2-dev libssl-dev zlib1g-dev
    python3 python3-dev python3-venv
    redis-server etcd-server
    wrk valgrind strace curl clang
)

"$(dirname "$0")/apt-install.sh" core "${packages[@]}"

if ! python3 -c 'import pytest' 2>/dev/null; then
    echo "deps: installing pytest"
    python3 -m pip install -q pytest
fi
