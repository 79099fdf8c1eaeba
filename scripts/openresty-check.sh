#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The README's recipe for OpenResty-style builds, checked: builds nginx from
# a source tree with ngx_devel_kit, lua-nginx-module and this module as
# dynamic modules (--add-dynamic-module) against OpenResty's LuaJIT
# (luajit2), puts lua-resty-core and lua-resty-lrucache on that LuaJIT's
# default path, then runs the integration tests that need only the C
# runtimes against that nginx.
#
#   scripts/openresty-check.sh SRC [pytest args...]
#
# SRC holds checkouts of luajit2/, lua-nginx-module/, ngx_devel_kit/,
# lua-resty-core/ and lua-resty-lrucache/ (the README names the tags that
# were tested) and nginx/, an nginx source tree (a release tarball or a
# checkout of github.com/nginx/nginx: nginx-dev's /usr/share/nginx/src has
# the headers only).  OUT: where everything is built (build/openresty).
set -euo pipefail

src=$(cd "$1" && pwd)
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$repo/build/openresty}
nginx_src=$src/nginx

mkdir -p "$out"
out=$(cd "$out" && pwd)
luajit=$out/luajit
lua_dir=$luajit/share/lua/5.1

if [ ! -x "$luajit/bin/luajit" ]; then
    echo "openresty-check: building LuaJIT ($src/luajit2)"
    make -s -C "$src/luajit2" -j2 PREFIX="$luajit" >"$out/luajit.log" 2>&1
    make -s -C "$src/luajit2" install PREFIX="$luajit" >>"$out/luajit.log" 2>&1
fi

make -s -C "$src/lua-resty-core" install LUA_LIB_DIR="$lua_dir" >/dev/null
make -s -C "$src/lua-resty-lrucache" install LUA_LIB_DIR="$lua_dir" >/dev/null

echo "openresty-check: building nginx ($nginx_src) with the modules"
rm -rf "$out/nginx-src"
cp -r "$nginx_src" "$out/nginx-src"
cd "$out/nginx-src"
configure=./configure
[ -x "$configure" ] || configure=auto/configure     # a git checkout
LUAJIT_LIB=$luajit/lib LUAJIT_INC=$(echo "$luajit"/include/luajit-2.1) \
    $configure --prefix="$out/nginx-src" --with-threads --with-compat \
        --with-debug \
        --with-ld-opt="-Wl,-rpath,$luajit/lib" \
        --add-dynamic-module="$src/ngx_devel_kit" \
        --add-dynamic-module="$src/lua-nginx-module" \
        --add-dynamic-module="$repo" >"$out/configure.log" 2>&1 \
    || { tail -20 "$out/configure.log"; exit 1; }
# the binary and the modules are all the tests need (no make install)
make -f objs/Makefile -j2 binary modules >"$out/make.log" 2>&1 \
    || { tail -30 "$out/make.log"; exit 1; }
objs=$out/nginx-src/objs
"$objs/nginx" -V 2>&1 | head -1

cd "$repo"
export NFFI_NGINX=$objs/nginx
export NFFI_MODULES_DIR=$objs
export NFFI_MODULE=$objs/ngx_http_lua_nonblocking_ffi_module.so
exec /usr/bin/python3 -m pytest -q -rs "$@" \
    tests/test_calls.py tests/test_flow.py tests/test_example.py \
    tests/test_lifecycle.py tests/test_core.py tests/test_stats.py \
    tests/test_event_loop.py tests/test_version.py
