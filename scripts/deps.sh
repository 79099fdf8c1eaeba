#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Installs the Debian packages that building, running and testing need,
# only when they are missing: stock nginx with lua-nginx-module, the nginx
# build tree and build dependencies, Debian's CPython for the Python loader,
# the services the examples talk to (redis, etcd), load generator, memory
# checker, strace for the benchmark's breakdown, clang and its runtime
# libraries (libclang-rt-dev: libFuzzer, ASan) for the fuzz targets,
# pytest and mypy from Debian (the tests run on /usr/bin/python3, also with
# pyenv on PATH: nothing is pip-installed into a system interpreter), and
# what the packaging tests use (debhelper, lintian, luarocks).  The language
# packages come from each part's own deps target (Makefile `deps`).
set -euo pipefail

packages=(
    nginx libnginx-mod-http-lua lua-resty-core nginx-dev
    build-essential libpcre2-dev libssl-dev zlib1g-dev
    python3 python3-dev python3-venv python3-pytest python3-pytest-xdist mypy
    redis-server etcd-server
    wrk valgrind strace curl clang libclang-rt-dev
    debhelper dpkg-dev lintian luarocks
)

"$(dirname "$0")/apt-install.sh" core "${packages[@]}"
