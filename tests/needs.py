"""What a test needs of the machine: where it is missing the test is skipped, but in CI (env CI set) it fails."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skip the test for `reason` (say how to get what it needs); in CI, where everything is installed, fail it."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def tools(*names: str) -> None:
    """`missing()` unless each of `names` is on PATH."""
    for name in names:
        if shutil.which(name) is None:
            missing(f"{name} not found: apt-get install -y util-linux e2fsprogs")


def root(*names: str) -> None:
    """`missing()` unless this process runs as root, with each of the tools `names` on PATH."""
    if os.geteuid() != 0:
        missing(f"needs root, for {', '.join(names)}")
    tools(*names)
