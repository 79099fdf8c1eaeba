#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# apt-install.sh LABEL PACKAGE...: installs the Debian packages that are not
# installed yet (with sudo unless root), saying so as "deps (LABEL)".
set -euo pipefail

label=$1
shift

missing=()
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

[ ${#missing[@]} -gt 0 ] || exit 0

echo "deps ($label): installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# the nginx package starts a system nginx on port 80; we run our own
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
