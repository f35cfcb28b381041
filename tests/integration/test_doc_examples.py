"""Every console example of README.md and docs/ runs against one live `numcast up` and shows what the page shows."""

import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import eventually, http
from examples import PAGES, Stack, blocks, check
from needs import missing
from test_commands import Up

from numcast.local import redis_binary


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`numcast up` in a folder of its own, its data in `numcast-data/` there as by default, on free ports."""
    if shutil.which("curl") is None:
        missing("curl not found: apt-get install -y curl")
    folder = tmp_path_factory.mktemp("examples")
    tools = folder / "bin"  # `redis-cli` where a user finds it: on PATH, or the one numcast ships
    tools.mkdir()
    if shutil.which("redis-cli") is None:
        os.symlink(redis_binary("redis-cli"), tools / "redis-cli")
    up = Up(folder, data="numcast-data")
    try:
        eventually(lambda: "Ctrl-C stops everything" in up.output(), timeout=30, message="the banner")
        workers = f"http://127.0.0.1:{up.control}/api/workers"
        eventually(
            lambda: len(http("GET", workers)[1]["workers"]) == 2, message="both workers listed, as a user finds them"
        )
        text = up.output()
        banner = text[text.index("numcast is up:") : text.index("Ctrl-C stops everything.") + 25]
        ports = {"control": up.control, "machine-1": up.worker, "machine-2": up.worker + 1, "alerter": up.alerter}
        ports |= {"tcp-1": up.tcp, "tcp-2": up.tcp + 1}
        # `numcast` and `python3` of the environment numcast is installed in, as in an activated venv or tox env.
        path = os.pathsep.join([os.path.dirname(sys.executable), str(tools), os.environ["PATH"]])
        env = {**os.environ, "PATH": path, "TERM": "dumb", "COLUMNS": "200"}
        yield Stack(folder, ports, env, banner)
    finally:
        if up.process.poll() is None:
            up.stop()


def test_every_console_example_shows_what_it_prints(stack):
    """The pages at once, each page's blocks in order: a page may set up what its next example shows."""
    live = {page: [block for block in blocks(page) if not block.offline] for page in PAGES}
    live = {page: found for page, found in live.items() if found}
    assert live, "console examples to run"

    def page_failures(page):
        return [failure for block in live[page] for failure in check(block, stack)]

    with ThreadPoolExecutor(len(live)) as pool:
        failures = [failure for found in pool.map(page_failures, live) for failure in found]
    assert not failures, "\n\n".join(failures)
