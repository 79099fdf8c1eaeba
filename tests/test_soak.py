# SPDX-License-Identifier: BSD-2-Clause
"""The soak's 30-second variant (make soak runs it for 10 minutes)."""

import os
import subprocess
import sys

import pytest

from harness import MEMCHECK

SOAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.py")


@pytest.mark.skipif(MEMCHECK, reason="a load test; valgrind is 20x slower")
def test_soak_30_seconds():
    done = subprocess.run([sys.executable, SOAK, "--seconds", "30"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.endswith("soak: ok\n"), (
        done.stdout[-4000:] + done.stderr[-2000:])
