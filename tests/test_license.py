# SPDX-License-Identifier: BSD-2-Clause
"""Every source file the repository tracks names its license."""

import os
import subprocess

from harness import REPO

# prose, data (fuzz corpora in testdata/ and corpus/) and generated files
# carry no SPDX line
NOT_SOURCE = (".md", ".json", ".svg", "go.sum", "Cargo.lock", ".supp",
              ".gitignore", "py.typed")
# Debian files whose formats have no comments (debian/copyright states the
# license in its own format)
NO_COMMENTS = ("debian/changelog", "debian/copyright", "debian/source/format")


def test_every_source_file_names_the_license():
    with open(os.path.join(REPO, "LICENSE")) as f:
        assert f.readline().strip() == "BSD 2-Clause License"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    missing = []
    for name in files:
        if name == "LICENSE" or name.startswith("docs/") \
                or "/testdata/" in name or "/corpus/" in name \
                or name.endswith(NOT_SOURCE) or name in NO_COMMENTS:
            continue
        with open(os.path.join(REPO, name), errors="replace") as f:
            head = [f.readline() for _ in range(3)]
        if not any("SPDX-License-Identifier: BSD-2-Clause" in line
                   for line in head):
            missing.append(name)
    assert files and not missing, missing
