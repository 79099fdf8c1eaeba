#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Installs what the Python examples need, only when it is missing: a
# virtualenv, build/python-venv, with the examples' PyPI packages
# (examples/python/requirements.txt).  Debian's CPython (which the loader
# embeds) and redis-server come from scripts/deps.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-/usr/bin/python3}
venv=${VENV:-$repo/build/python-venv}

requirements=$repo/examples/python/requirements.txt

if [ ! -x "$venv/bin/python" ]; then
    echo "deps (python): creating the virtualenv $venv"
    "$python" -m venv "$venv"
fi

# the copy of requirements.txt in the venv tells what was installed there
stamp=$venv/requirements.installed
if cmp -s "$requirements" "$stamp"; then
    exit 0
fi

echo "deps (python): installing $requirements into $venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$requirements"
cp "$requirements" "$stamp"
