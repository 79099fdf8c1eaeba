#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Installs what the Java loader needs, only when it is missing: a JDK
# (javac, jni.h, libjvm.so) and Maven from Debian (and for the JDBC
# example, Debian's PostgreSQL JDBC driver and server), then the Maven plugins
# that build the API jar, into Maven's cache (~/.m2), so that later builds
# work offline.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

packages=()
command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || packages+=(maven)
# the JDBC example: its driver, and the server the tests start
packages+=(libpostgresql-jdbc-java postgresql)
"$here/../../scripts/apt-install.sh" java "${packages[@]}"

# the plugins of this pom.xml, fetched once: a copy of the pom beside
# Maven's cache tells that they are there (later builds need no network)
stamp=${HOME}/.m2/nonblocking-ffi.pom.fetched
if cmp -s "$here/pom.xml" "$stamp"; then
    exit 0
fi

echo "deps (java): fetching the Maven plugins into ~/.m2"
cd "$here"
log=$(mktemp)
if ! mvn -q -B --no-transfer-progress -Dstyle.color=never package \
        >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    exit 1
fi
rm -f "$log"
cp "$here/pom.xml" "$stamp"
