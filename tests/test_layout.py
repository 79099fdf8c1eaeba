# SPDX-License-Identifier: BSD-2-Clause
"""src/ stays as its map (the comment at the top of ngx_nffi.h) says: each
file calls only files listed below it, so no two files call each other."""

import glob
import os
import re

from harness import REPO

SRC = os.path.join(REPO, "src")


def functions_defined(text):
    # nginx style: the return type on its own line, the name at column 0
    return set(re.findall(r"^(\w+)\(", text, re.M))


def test_files_call_only_files_below_them_in_the_map():
    with open(os.path.join(SRC, "ngx_nffi.h")) as f:
        header = f.read()
    order = re.findall(r"^ \*   (ngx_nffi_\w+\.c) ", header, re.M)
    files = sorted(os.path.basename(p)
                   for p in glob.glob(os.path.join(SRC, "*.c")))
    assert sorted(order) == files, "the map lists every file once"

    texts, defined = {}, {}
    for name in files:
        with open(os.path.join(SRC, name)) as f:
            texts[name] = f.read()
        for function in functions_defined(texts[name]):
            defined[function] = name

    upward = []
    for caller in files:
        for function in set(re.findall(r"\b(\w+)\(", texts[caller])):
            callee = defined.get(function)
            if callee and callee != caller \
                    and order.index(callee) < order.index(caller):
                upward.append("%s calls %s() of %s"
                              % (caller, function, callee))
    assert not upward, upward
