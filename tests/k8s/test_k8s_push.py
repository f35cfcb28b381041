"""The push doors in the manifests, offline: the push token is a Secret of its own, mounted into the control-plane
alone; the shipped Prometheus scrapes the pushed series with honor_labels; the example relay is hardened."""

from __future__ import annotations

import pytest
from k8s_support import (
    EXAMPLES,
    MONITORING,
    ROOT,
    collected,
    container_command,
    container_env,
    containers,
    manifest_files,
    numcast_containers,
    objects,
)
from test_k8s_tokens import mounted_secret, secret_value

from numcast import auth
from numcast_control.push_api import EXPOSITION_PATH

pytestmark = pytest.mark.k8s

PUSH_VAR, PUSH_FILE_VAR = auth.PUSH_VARS


def test_the_push_token_is_mounted_into_the_control_plane_only():
    found = {}
    for container in numcast_containers():
        env = container_env(container)
        assert PUSH_VAR not in env, f"{container.id}: the push token comes from a file, never a literal"
        if PUSH_FILE_VAR in env:
            found[container_command(container)] = mounted_secret(container, env[PUSH_FILE_VAR])
        volumes = [v.get("secret", {}).get("secretName") for v in container.pod.get("volumes", [])]
        if container_command(container) != "control":
            assert "push-token" not in volumes, f"{container.id} mounts the push token"
    assert list(found) == ["control"]
    secret, key = found["control"]
    assert secret == "push-token" and auth.problem(secret_value(secret, key)) is None
    (control,) = [c for c in numcast_containers() if container_command(c) == "control"]
    control_token = mounted_secret(control, container_env(control)[auth.FILE_VAR])
    assert secret_value(*control_token) != secret_value(secret, key), "two tokens, two roles"


def test_prometheus_scrapes_the_pushed_series_with_honor_labels():
    import yaml

    config = yaml.safe_load((MONITORING / "config" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "numcast-pushed"]
    assert job["honor_labels"] is True and job["metrics_path"] == EXPOSITION_PATH
    keeps = {rule["regex"] for rule in job["relabel_configs"] if rule.get("action") == "keep"}
    assert keeps == {"control-plane", "http"}, "the control-plane's pod, on the port of the doors"


@pytest.mark.parametrize("name", collected(lambda: ["relay-sidecar.yaml", "push-network-policy.yaml"]))
def test_the_examples_are_not_applied_with_infra_k8s(name):
    assert (ROOT / "infra" / "k8s" / "examples" / name).is_file()
    assert not (ROOT / "infra" / "k8s" / name).exists(), "kubectl apply -f infra/k8s reads only the top folder"


@pytest.mark.parametrize("path", collected(lambda: manifest_files(EXAMPLES)), ids=lambda path: path.name)
def test_every_example_validates_strictly_against_kubernetes_1_31(path):
    import kubernetes_validate
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
        assert doc["metadata"]["namespace"] == "numcast"


def test_the_relay_sidecar_runs_numcast_relay_with_valid_arguments_and_the_push_token():
    from numcast.push import relay

    (sidecar,) = [c for c in containers(folder=EXAMPLES) if c.spec["name"] == "relay"]
    args = sidecar.spec["args"]
    assert args[0] == "relay" and "command" not in sidecar.spec, "the image's ENTRYPOINT, numcast"
    parsed = relay.parse(args[1:])
    (exporter,) = [c for c in containers(folder=EXAMPLES) if c.pod is sidecar.pod and c.spec["name"] != "relay"]
    assert parsed.scrape == f"http://127.0.0.1:{exporter.port('metrics')['containerPort']}/metrics"
    assert parsed.to == "http://control-plane.numcast:8000"
    assert sidecar.port(parsed.health_port) and sidecar.spec["image"] == "control-plane:0.1.0"
    assert "PUSH_TOKEN" not in {v["name"] for v in sidecar.spec["env"]}
    token_file = next(v["value"] for v in sidecar.spec["env"] if v["name"] == PUSH_FILE_VAR)
    folder = token_file.rpartition("/")[0]
    volume = sidecar.mounts()[folder]
    assert volume["secret"]["secretName"] == "push-token" and volume["readOnly"]
    (account,) = objects("ServiceAccount", EXAMPLES)
    assert sidecar.pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False and sidecar.pod["automountServiceAccountToken"] is False
    # What the example network policy lets through to the control-plane.
    assert sidecar.labels["numcast.io/push"] == "true"
