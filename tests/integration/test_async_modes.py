"""Both supported async modes run the same pipeline: eventlet (the default) and threading."""

import pytest
from conftest import eventually


@pytest.mark.parametrize("mode", ["eventlet", "threading"])
def test_the_pipeline_runs_in_each_async_mode(redis_server, services, mode):
    worker = services("worker", redis_server.url, wait="/readyz", ASYNC_MODE=mode)
    control = services(
        "control",
        redis_server.url,
        RATE_HZ="20",
        ASYNC_MODE=mode,
        TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}",
    )
    eventually(lambda: len(worker.json("/api/history")["envelopes"]) >= 10)
    status = worker.json("/api/status")
    assert status["counters"]["accepted"]["redis"] + status["counters"]["accepted"]["tcp"] >= 10
    assert status["counters"]["duplicates"] > 0, "each value came by both paths and was kept once"
    assert f"async_mode={mode}" in worker.logs()
    assert control.stop() == 0 and worker.stop() == 0
