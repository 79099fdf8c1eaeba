#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make deb: builds the Debian packages (debian/) from a copy of the files git
# tracks, as they are in the working tree, in build/deb/, so the checkout
# stays clean.  The .deb files, the .changes and lintian's report
# (lintian.txt) end up in build/deb/.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(dpkg-parsechangelog -S Version)
out=build/deb
src=$out/lua-resty-nonblocking-ffi-$version

rm -rf "$out"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard \
    | xargs -0 cp --parents -t "$src" 2>/dev/null || true
# files deleted in the working tree are not copied (cp fails on them)

(cd "$src" && dpkg-buildpackage -b -us -uc -j2 >../build.log 2>&1) || {
    tail -40 "$out/build.log"
    exit 1
}

echo "deb: $(cd "$out" && ls *.deb | tr '\n' ' ')"
# NFFI_DEB_LINTIAN=0 (tests/test_deb.py) skips lintian, which takes a while
if [ "${NFFI_DEB_LINTIAN:-1}" != 0 ]; then
    lintian --tag-display-limit 0 -I --pedantic "$out"/*.changes 2>&1 \
        | grep -v '^running with root privileges' >"$out/lintian.txt" || true
    echo "deb: lintian: $(grep -c '^[EWIP]:' "$out/lintian.txt" || true)" \
         "tags (build/deb/lintian.txt)"
    cat "$out/lintian.txt"
fi
