# SPDX-License-Identifier: BSD-2-Clause
"""Ten seconds of each fuzz target (make fuzz runs each for a minute)."""

import os
import shutil
import subprocess
import sys

import pytest

from harness import BUILD, MEMCHECK, NOT_HERE, REPO

FUZZ_NGINX = os.path.join(REPO, "tests", "fuzz_nginx.py")
CORPUS = os.path.join(REPO, "tests", "fuzz", "corpus")


@pytest.mark.skipif(MEMCHECK, reason="random load; valgrind is 20x slower")
@pytest.mark.parametrize("target", ["lua_args", "respond"])
def test_fuzz_through_nginx(target):
    done = subprocess.run([sys.executable, FUZZ_NGINX, "--seconds", "10",
                           target], capture_output=True, text=True,
                          timeout=300)
    # the head has the seed and the first failing case, to replay it
    assert done.returncode == 0 and done.stdout.endswith("fuzz: ok\n"), (
        done.stdout[:3000] + "\n...\n" + done.stdout[-2000:]
        + done.stderr[-2000:])


NOT_NGINX = "no nginx in it: the memcheck run would only repeat it"


@pytest.mark.skipif(MEMCHECK, reason=NOT_NGINX)
@pytest.mark.skipif(shutil.which("go") is None,
                    reason=NOT_HERE + "the Go toolchain")
def test_fuzz_go_cfg_split():
    # a count, not a time: a -fuzztime duration can end the run with a
    # spurious "context deadline exceeded" (golang/go#75804); about 7 s here
    done = subprocess.run(["go", "test", "-run", "^$", "-fuzz",
                           "FuzzSplitCfg", "-fuzztime", "300000x", "./nffi"],
                          cwd=os.path.join(REPO, "sdk", "go"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.skipif(MEMCHECK, reason=NOT_NGINX)
@pytest.mark.skipif(shutil.which("clang") is None, reason=NOT_HERE + "clang")
@pytest.mark.parametrize("target", ["shim_cfg"])
def test_libfuzzer(target, tmp_path):
    binary = os.path.join(BUILD, "fuzz", target + "_fuzz")
    built = subprocess.run(["make", "-s", binary], cwd=REPO,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    # new finds go to a scratch folder; the repository's corpus seeds it
    done = subprocess.run([binary, "-max_total_time=10", str(tmp_path),
                           os.path.join(CORPUS, target)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
