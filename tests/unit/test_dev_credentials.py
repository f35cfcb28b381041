"""The committed development credentials are recognised wherever a service gets them, and said loudly: at start,
in /readyz and on both pages; a credential of one's own is not."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from numcast import dev_credentials, redis_acl
from numcast.settings import from_env
from numcast_control import create_app as control_app
from numcast_control.settings import ControlSettings
from numcast_worker import create_app as worker_app
from numcast_worker.settings import WorkerSettings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
BANNER = 'class="development-banner" role="alert"'


def committed() -> list[str]:
    """Every password and token the manifests commit."""
    values = []
    for name in ("05-secret.yaml", "07-tokens.yaml"):
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            data = doc.get("stringData", {})
            values += [data[key] for key in ("password", "token") if key in data]
    return values


def test_every_committed_credential_is_recognised_and_one_of_ones_own_is_not():
    values = committed()
    assert len(values) == len(redis_acl.ROLES) + 3, values  # a password per Redis role, three tokens
    assert all(dev_credentials.is_development(value) for value in values)
    assert not dev_credentials.is_development(secrets.token_urlsafe(32))
    assert not dev_credentials.is_development("numcast-dev-but-no-marker-end")


def file_holding(tmp_path: Path, value: str) -> str:
    path = tmp_path / "secret"
    path.write_text(value + "\n")
    return str(path)


@pytest.mark.parametrize("where", ["env", "file", "url"])
def test_a_development_redis_password_is_found_wherever_it_comes_from(tmp_path, where):
    password = "numcast-dev-redis-worker-password-change-me"
    environ = {
        "env": {"REDIS_PASSWORD": password},
        "file": {"REDIS_PASSWORD_FILE": file_holding(tmp_path, password)},
        "url": {"REDIS_URL": f"redis://worker:{password}@127.0.0.1:6379/0"},
    }[where]
    settings = from_env(WorkerSettings, {"WORKER_NAME": "w", **environ}, async_mode="threading")
    assert dev_credentials.found(settings) == tuple(environ)


@pytest.mark.parametrize(
    "make",
    [
        lambda env: control_app(from_env(ControlSettings, env, async_mode="threading")),
        lambda env: worker_app(from_env(WorkerSettings, {"WORKER_NAME": "w", **env}, async_mode="threading")),
    ],
    ids=["control", "worker"],
)
def test_both_pages_and_readyz_say_so_and_say_nothing_otherwise(tmp_path, caplog, make):
    own = file_holding(tmp_path, secrets.token_urlsafe(32))
    quiet = make({"REDIS_PASSWORD_FILE": own}).test_client()
    assert BANNER not in quiet.get("/").get_data(as_text=True)
    assert "development_credentials" not in quiet.get("/readyz").get_json()
    assert "DEVELOPMENT CREDENTIALS" not in caplog.text
    development = file_holding(tmp_path, "numcast-dev-redis-worker-password-change-me")
    loud = make({"REDIS_PASSWORD_FILE": development}).test_client()
    assert BANNER in loud.get("/").get_data(as_text=True)
    assert loud.get("/readyz").get_json()["development_credentials"] == ["REDIS_PASSWORD_FILE"]
    assert "DEVELOPMENT CREDENTIALS in use settings=REDIS_PASSWORD_FILE" in caplog.text
