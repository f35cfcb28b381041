"""The tokens in the manifests, offline: Secrets mounted as files where the settings and Alertmanager read them."""

from __future__ import annotations

import dataclasses

import pytest
from k8s_support import (
    MANIFESTS,
    MONITORING,
    ROOT,
    Container,
    collected,
    container_command,
    container_env,
    containers,
    documents,
    named,
    numcast_containers,
    settings_class,
)

from numcast import auth

pytestmark = pytest.mark.k8s

ALERTMANAGER_YML = MONITORING / "config" / "alertmanager.yml"


def settings_fields(container: Container) -> dict[str, dataclasses.Field]:
    """{env var: field} of the settings of the numcast service `container` runs."""
    return {f.metadata["env"]: f for f in dataclasses.fields(settings_class(container_command(container)))}


def mounted_secret(container: Container, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at `path`, which must be a key of a Secret mounted read-only as a folder."""
    folder, _, file = path.rpartition("/")
    mounts = [m for m in container.spec.get("volumeMounts", []) if m["mountPath"] == folder]
    assert len(mounts) == 1, f"{container.id}: nothing mounted at {folder} for {path}"
    (mount,) = mounts
    # A subPath mount never sees the Secret change; the folder does (within a minute or so).
    assert "subPath" not in mount and mount.get("readOnly") is True, f"{container.id}: {mount}"
    volume = next(v for v in container.pod["volumes"] if v["name"] == mount["name"])
    assert "secret" in volume, f"{container.id}: {path} is not from a Secret: {volume}"
    keys = {item["path"]: item["key"] for item in volume["secret"].get("items", [])} or None
    key = keys[file] if keys else file
    secret = named("Secret", volume["secret"]["secretName"])  # infra/k8s holds every Secret
    assert key in secret.get("stringData", {}), f"Secret {secret['metadata']['name']} has no key {key}"
    # Owned by root and the pod's fsGroup: the group must be able to read it, nobody else needs to.
    assert volume["secret"].get("defaultMode", 0o644) & 0o440 == 0o440
    assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "not world-readable"
    return secret["metadata"]["name"], key


def secret_value(name: str, key: str) -> str:
    return named("Secret", name)["stringData"][key]


@pytest.mark.parametrize("container", collected(numcast_containers), ids=lambda c: c.id)
def test_every_file_setting_holding_a_secret_is_a_mounted_secret_key(container):
    fields = settings_fields(container)
    for name, value in container_env(container).items():
        field = fields[name]
        if name.endswith("_FILE") and field.metadata["secret"]:
            secret = mounted_secret(container, value)
            if name == auth.FILE_VAR:
                assert auth.problem(secret_value(*secret)) is None, f"{container.id}: {secret} is no usable token"
        elif name.endswith("_FILE"):  # a file the service writes (SINK_FILE): on a writable volume
            folder = value.rpartition("/")[0]
            assert "emptyDir" in container.mounts().get(folder, {}), f"{container.id}: {name}={value}"
        elif field.metadata["secret"]:
            ref = next((v.get("valueFrom", {}) for v in container.spec.get("env", []) if v["name"] == name), {})
            assert "secretKeyRef" in ref, f"{container.id}: {name} must come from a Secret, never a literal"


def test_the_control_plane_and_the_alerter_each_require_a_token_of_their_own():
    found = {}
    for container in numcast_containers():
        env = container_env(container)
        command = container_command(container)
        if command == "worker":
            assert auth.TOKEN_VAR not in env and auth.FILE_VAR not in env, "a worker takes no changes"
            continue
        # Always a token: through a port-forward every client is loopback, which is all no token would ask.
        assert auth.FILE_VAR in env and auth.TOKEN_VAR not in env, f"{container.id}: the token comes from a file"
        found[command] = mounted_secret(container, env[auth.FILE_VAR])
    assert set(found) == {"control", "alerter"}
    assert found["control"][0] != found["alerter"][0], "the operator's and Alertmanager's tokens are two Secrets"
    assert secret_value(*found["control"]) != secret_value(*found["alerter"])


def test_alertmanager_calls_the_webhook_with_the_alerter_s_token():
    import yaml

    (alertmanager,) = [c for c in containers(folder=MONITORING) if c.workload["metadata"]["name"] == "alertmanager"]
    (alerter,) = [c for c in numcast_containers() if container_command(c) == "alerter"]
    receivers = {r["name"]: r for r in yaml.safe_load(ALERTMANAGER_YML.read_text())["receivers"]}
    (webhook,) = receivers["numcast-alerter"]["webhook_configs"]
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer" and set(authorization) == {"type", "credentials_file"}
    sent = mounted_secret(alertmanager, authorization["credentials_file"])
    assert sent == mounted_secret(alerter, container_env(alerter)[auth.FILE_VAR])


def test_the_development_tokens_are_marked_and_the_docs_say_how_to_replace_each():
    assert (MANIFESTS / "07-tokens.yaml").read_text().startswith("# DEVELOPMENT TOKENS ONLY.")
    names = {doc["metadata"]["name"] for file, doc in documents() if file == "07-tokens.yaml"}
    assert names == {"control-token", "alerter-token", "push-token"}
    page = (ROOT / "docs" / "security.md").read_text()
    for name in names:
        assert f"kubectl -n numcast create secret generic {name} " in page, f"docs/security.md: how to replace {name}"
