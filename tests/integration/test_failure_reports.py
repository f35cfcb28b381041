"""What CI prints when a test fails: the logs of the services that test started, with nothing to switch on."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

SAMPLE = """
def test_that_fails(redis_server, services):
    services("worker", redis_server.url)
    assert False, "failing on purpose"


def test_that_passes(redis_server, services):
    services("control", redis_server.url)
"""


def test_a_failed_test_reports_the_logs_of_its_services(tmp_path):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SAMPLE))
    env = {key: value for key, value in os.environ.items() if key != "NUMCAST_TEST_LOGS"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(TESTS)},  # the suite's own conftest, as a plugin
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed" in result.stdout
    report = result.stdout.split("FAILURES", 1)[1]
    assert "numcast worker #0 log, last lines" in report
    assert "worker starting name=machine-1" in report, "the worker's own words"
    assert "control-plane starting" not in result.stdout, "a test that passed shows nothing"
