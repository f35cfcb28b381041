"""What the images rely on, tested on real processes (no Docker engine here): numcast as the image's non-root
uid, with a Redis that has a user per role (its password a root-owned file, as a mounted Secret is), writing only
to its data dir and TMPDIR, and exiting 0 soon after SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import needs
import pytest
import redis
from conftest import NUMCAST, as_user, envelope, eventually, http

from numcast.local import Redis, free_port, wait_http
from numcast.redis_conn import client

UID = GID = 10001  # the Dockerfiles' USER; test_k8s_images checks that the manifests run as the same
STOP_SECONDS = 5.0  # well inside the manifests' terminationGracePeriodSeconds
CAP_DAC_READ_SEARCH = 1 << 2

pytestmark = pytest.mark.k8s


@pytest.fixture(autouse=True)
def _root() -> None:
    needs.root("setpriv")  # to become the image's uid


# The image's uid, no groups, no new privileges, and only the capability to read any path (the image has the
# interpreter world-readable under /opt/venv; this host may not). Writes are what these tests are about.
AS_IMAGE_USER = as_user(UID)


class Layout:
    """The image's filesystem, scaled down: a root-owned tree with only `data` and `tmp` writable by the uid."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="numcast-image-"))
        os.chmod(self.root, 0o755)
        self.data, self.tmp, self.readonly = self.root / "data", self.root / "tmp", self.root / "app"
        for path, owner in ((self.data, UID), (self.tmp, UID), (self.readonly, 0)):
            path.mkdir(mode=0o755)
            os.chown(path, owner, owner)

    def files(self) -> list[str]:
        """Every file under the tree, relative to it."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


def owned_by_uid_elsewhere(layout: Layout) -> set[str]:
    """Files the uid owns in the world-writable places outside `layout`: where a stray write would land."""
    found = subprocess.run(
        ["find", "/tmp", "/var/tmp", "/dev/shm", "-xdev", "-user", str(UID), "-not", "-path", f"{layout.root}*"],
        capture_output=True,
        text=True,
    )
    return set(found.stdout.split())


@pytest.fixture
def layout() -> Iterator[Layout]:
    tree = Layout()
    yield tree
    shutil.rmtree(tree.root, ignore_errors=True)


@pytest.fixture
def protected_redis() -> Iterator[Redis]:
    """A Redis with the default user off and a user per role, as the cluster's."""
    server = Redis(acl=True).start()
    yield server
    server.stop()


def as_user_of(redis_server: Redis, role: str, layout: Layout) -> dict[str, str]:
    """REDIS_USERNAME and REDIS_PASSWORD_FILE, the file as Kubernetes mounts a Secret: root-owned, 0440, the pod's
    group (fsGroup), in a folder of its own (`secrets/`, left out of what the tests count as written)."""
    folder = layout.root / "secrets"
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / f"redis-{role}-password"
    path.write_text(redis_server.passwords[role] + "\n")
    os.chown(path, 0, GID)
    os.chmod(path, 0o440)
    return {"REDIS_USERNAME": role, "REDIS_PASSWORD_FILE": str(path)}


def publisher_of(redis_server: Redis) -> redis.Redis:
    """The test's own client, as the control-plane's user: it may publish."""
    return client(redis_server.endpoint("control"))


class ImageProcess:
    """`numcast <command>` started as the image would start it."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.command, self.log = command, log
        self.url = f"http://127.0.0.1:{env['PORT']}"
        base = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [*AS_IMAGE_USER, NUMCAST, command], cwd=cwd, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT
            )

    def status(self) -> dict[str, str]:
        """/proc/<pid>/status as a dict: who the process runs as."""
        lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return dict(line.split(":\t", 1) for line in lines if ":\t" in line)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_SECONDS * 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Leave nothing running after a failed test."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def run_as_image(tmp_path) -> Iterator:
    started: list[ImageProcess] = []

    def start(command: str, cwd: Path, **env: str) -> ImageProcess:
        process = ImageProcess(command, cwd, env, tmp_path / f"{command}.log")
        started.append(process)
        try:
            wait_http(process.url + "/readyz", 20, process.process)
        except RuntimeError:
            pytest.fail(f"numcast {command} did not get ready:\n{process.log.read_text(errors='replace')}")
        return process

    yield start
    for process in started:
        process.kill()


def assert_runs_as_image_user(process: ImageProcess) -> None:
    status = process.status()
    assert status["Uid"].split() == [str(UID)] * 4 and status["Gid"].split() == [str(GID)] * 4
    assert status["Groups"].strip() == ""
    assert int(status["CapEff"], 16) & ~CAP_DAC_READ_SEARCH == 0
    assert status["NoNewPrivs"] == "1"


def test_worker_runs_as_the_image_user_and_writes_only_its_data_dir(protected_redis, layout, run_as_image):
    before = owned_by_uid_elsewhere(layout)
    worker = run_as_image(
        "worker",
        cwd=layout.data,  # the image's WORKDIR
        REDIS_URL=protected_redis.url,
        **as_user_of(protected_redis, "worker", layout),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        ADMIN_PORT=str(free_port()),
        TCP_PORT=str(free_port()),
        WORKER_NAME="machine-1",
        SINK_FILE=str(layout.data / "numbers.jsonl"),
        HOME=str(layout.tmp),
        TMPDIR=str(layout.tmp),
    )
    assert_runs_as_image_user(worker)
    assert http("GET", worker.url + "/healthz") == (200, {"status": "ok"})

    publisher = publisher_of(protected_redis)
    for seq in range(1, 4):
        publisher.publish("numbers", envelope(seq, value=seq))
    publisher.close()
    eventually(lambda: len(http("GET", worker.url + "/api/history")[1]["envelopes"]) == 3, message="3 values received")

    code, seconds = worker.terminate()
    assert code == 0, worker.log.read_text(errors="replace")
    assert seconds < STOP_SECONDS
    sink = (layout.data / "numbers.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in sink] == [1, 2, 3], "the sink is flushed at SIGTERM"
    written = [path for path in layout.files() if not path.startswith(("tmp/", "secrets/"))]
    assert written == ["data/numbers.jsonl"]
    assert owned_by_uid_elsewhere(layout) == before


def test_control_plane_runs_as_the_image_user_and_writes_nothing(protected_redis, layout, run_as_image):
    before = owned_by_uid_elsewhere(layout)
    subscriber = client(protected_redis.endpoint("viewer")).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe("numbers")
    control = run_as_image(
        "control",
        cwd=layout.readonly,  # in the cluster the control-plane's WORKDIR is part of the read-only root
        REDIS_URL=protected_redis.url,
        **as_user_of(protected_redis, "control", layout),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        ADMIN_PORT=str(free_port()),
        RATE_HZ="20",
        HOME=str(layout.tmp),
        TMPDIR=str(layout.tmp),
    )
    assert_runs_as_image_user(control)
    assert http("GET", control.url + "/healthz") == (200, {"status": "ok"})
    message = eventually(lambda: subscriber.get_message(timeout=0.2), message="a value published")
    assert json.loads(message["data"])["seq"] >= 1
    subscriber.close()

    code, seconds = control.terminate()
    assert code == 0, control.log.read_text(errors="replace")
    assert seconds < STOP_SECONDS
    assert [path for path in layout.files() if not path.startswith(("tmp/", "secrets/"))] == []
    assert owned_by_uid_elsewhere(layout) == before


def test_alerter_runs_as_the_image_user_reads_its_rules_and_writes_nothing(protected_redis, layout, run_as_image):
    before = owned_by_uid_elsewhere(layout)
    rules = layout.readonly / "rules.yaml"  # a ConfigMap volume: root-owned, read-only to the uid
    rules.write_text("rules:\n  - {alert: High, above: 95}\n")
    alerter = run_as_image(
        "alerter",
        cwd=layout.readonly,
        REDIS_URL=protected_redis.url,
        **as_user_of(protected_redis, "alerter", layout),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        ADMIN_PORT=str(free_port()),
        ALERT_RULES=str(rules),
        HOME=str(layout.tmp),
        TMPDIR=str(layout.tmp),
    )
    assert_runs_as_image_user(alerter)
    publisher = publisher_of(protected_redis)
    publisher.publish("numbers", envelope(1, value=99.0))
    eventually(lambda: len(publisher.hgetall("numcast:alerts:alerts")) == 1, message="the alert in Redis")
    publisher.close()

    code, seconds = alerter.terminate()
    assert code == 0, alerter.log.read_text(errors="replace")
    assert seconds < STOP_SECONDS
    assert [path for path in layout.files() if not path.startswith(("tmp/", "secrets/"))] == ["app/rules.yaml"]
    assert owned_by_uid_elsewhere(layout) == before
