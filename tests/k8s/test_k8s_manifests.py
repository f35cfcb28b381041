"""infra/k8s checked without a cluster: strict 1.31 schemas, and cross-checks with the code and the README."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

import pytest
from k8s_support import (
    HA,
    LABELS,
    MANIFESTS,
    MONITORING,
    NAMESPACE,
    app_for,
    build_commands,
    collected,
    container_command,
    container_env,
    containers,
    documents,
    every_container,
    ha_only,
    manifest_files,
    mounted_file,
    named,
    numcast_containers,
    objects,
    project_version,
    resolve_ref,
    serves,
    settings_class,
)

pytestmark = pytest.mark.k8s

KUBERNETES_VERSION = "1.31.0"
# Kinds `kubectl apply` knows on any cluster; anything needing a CRD belongs in another folder.
CORE_KINDS = {"Namespace", "Secret", "ConfigMap", "ServiceAccount", "Deployment", "Service", "NetworkPolicy"}
# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
RESTRICTED_VOLUMES |= {"projected", "secret"}


@pytest.mark.parametrize(
    "path", manifest_files() + manifest_files(MONITORING), ids=lambda path: f"{path.parent.name}/{path.name}"
)
def test_every_document_validates_strictly_against_kubernetes_1_31(path):
    import kubernetes_validate
    import yaml

    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.path}: {exc.message}")


def test_the_folder_holds_only_core_kinds_in_one_namespace():
    for name, doc in documents():
        assert doc["kind"] in CORE_KINDS, f"{name}: {doc['kind']} needs a CRD or is unexpected; put it outside"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['metadata']['name']}"
    others = [
        p for p in MANIFESTS.iterdir() if p.suffix not in (".yaml",) and p.name not in ("examples", "Kustomization")
    ]
    assert not others, (
        "only .yaml files in infra/k8s, the examples' folder and Kustomization (`kubectl apply` skips both)"
    )


def test_the_namespace_file_sorts_first_and_enforces_restricted():
    first = manifest_files()[0]
    docs = [doc for name, doc in documents() if name == first.name]
    assert [(doc["kind"], doc["metadata"]["name"]) for doc in docs] == [("Namespace", NAMESPACE)]
    labels = docs[0]["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_every_object_and_pod_template_carries_the_labels():
    for name, doc in documents() + documents(MONITORING):
        labels = doc["metadata"].get("labels", {})
        assert set(LABELS) <= set(labels), f"{name} {doc['kind']}/{doc['metadata']['name']}: {labels}"
        assert labels["app.kubernetes.io/part-of"] == "numcast"
        if doc["kind"] in ("Deployment", "StatefulSet"):
            template = doc["spec"]["template"]["metadata"]["labels"]
            assert set(LABELS) <= set(template)
            assert doc["spec"]["selector"]["matchLabels"].items() <= template.items()
            # The selector is immutable: a version in it would make every upgrade a delete-and-create.
            assert "app.kubernetes.io/version" not in doc["spec"]["selector"]["matchLabels"]


def test_numcast_images_are_the_readme_builds_at_the_project_version():
    built = build_commands()
    version = project_version()
    assert built == {
        "services/control/Dockerfile": f"control-plane:{version}",
        "services/worker/Dockerfile": f"worker-node:{version}",
    }
    used = {c.spec["image"] for c in numcast_containers()}
    assert used == set(built.values())
    for container in numcast_containers():
        assert container.labels["app.kubernetes.io/version"] == version


@pytest.mark.parametrize("container", collected(every_container), ids=lambda c: c.id)
def test_every_image_is_pinned_and_never_pulled_when_present(container):
    image = container.spec["image"]
    name, _, tag = image.rpartition(":")
    assert name and re.fullmatch(r"v?\d+\.\d+\.\d+(-[\w.]+)?", tag), f"{image}: pin a version tag"
    assert container.spec.get("imagePullPolicy") == "IfNotPresent"


@pytest.mark.parametrize(
    "folder, service",
    collected(lambda: [(f, s["metadata"]["name"]) for f in (MANIFESTS, MONITORING, HA) for s in objects("Service", f)]),
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_every_service_selects_one_pod_template_and_targets_its_ports(folder, service):
    svc = named("Service", service, folder)
    selector = svc["spec"]["selector"]
    matches = [c for c in containers(init=False, folder=folder) if selector.items() <= c.labels.items()]
    workloads = {c.workload["metadata"]["name"] for c in matches}
    assert len(workloads) == 1, f"Service {service} selects {sorted(workloads) or 'nothing'}"
    for port in svc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert any(c.port(target) for c in matches), f"Service {service}: no container declares port {target}"


def test_the_workers_are_exposed_on_the_nodeport_services_users_know():
    nodeports = {s["metadata"]["name"]: s for s in objects("Service") if s["spec"]["type"] == "NodePort"}
    assert sorted(nodeports) == ["machine-1-nodeport", "machine-2-nodeport"]
    for name, svc in nodeports.items():
        assert svc["spec"]["selector"]["app.kubernetes.io/instance"] == name.removesuffix("-nodeport")
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"], "only the dashboard leaves the cluster"


@pytest.mark.parametrize("container", collected(every_container), ids=lambda c: c.id)
def test_every_container_meets_the_restricted_pod_security_standard(container):
    pod = container.pod
    assert container.security("runAsNonRoot") is True
    assert container.security("runAsUser") not in (None, 0), "a numeric non-root uid"
    assert container.security("runAsGroup") not in (None, 0)
    assert container.security("privileged") in (None, False)
    assert container.security("allowPrivilegeEscalation") is False
    assert container.security("readOnlyRootFilesystem") is True
    seccomp = container.security("seccompProfile") or {}
    assert seccomp.get("type") == "RuntimeDefault"
    capabilities = container.spec.get("securityContext", {}).get("capabilities", {})
    assert capabilities.get("drop") == ["ALL"]
    assert not capabilities.get("add"), "restricted allows adding NET_BIND_SERVICE only; we need none"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(key) in (None, False), key
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"{volume['name']}: {kinds}"
    for port in container.spec.get("ports", []):
        assert "hostPort" not in port and "hostIP" not in port


@pytest.mark.parametrize("container", collected(every_container), ids=lambda c: c.id)
def test_every_writable_path_is_an_emptydir(container):
    mounts = container.mounts()
    assert "emptyDir" in mounts.get("/tmp", {}), "/tmp is writable on a read-only root"
    for path, volume in mounts.items():
        if "configMap" in volume or "secret" in volume:
            assert volume["readOnly"], f"{path}: a ConfigMap or a Secret is mounted read-only"
            continue
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            if "spec" in claim:  # a StatefulSet's claim template (the HA Redis): bounded by the size it requests
                assert claim["spec"]["resources"]["requests"]["storage"], path
            else:  # the example worker whose sink is the record (worker-sink-pvc.yaml)
                sink = next(v["value"] for v in container.spec["env"] if v["name"] == "SINK_FILE")
                assert sink.rpartition("/")[0] == path, f"{path}: only the sink's folder may be on a claim"
            continue
        assert "emptyDir" in volume, f"{path} mounts {volume}"
        assert volume["emptyDir"].get("sizeLimit"), f"{path}: bound the emptyDir, it fills the node's disk"


@pytest.mark.parametrize("container", collected(every_container), ids=lambda c: c.id)
def test_every_container_has_requests_a_memory_limit_and_both_probes(container):
    resources = container.spec.get("resources", {})
    assert {"cpu", "memory"} <= set(resources.get("requests", {}))
    assert "memory" in resources.get("limits", {})
    for probe in ("readinessProbe", "livenessProbe"):
        assert (probe in container.spec) is not container.init, "every container has probes, an init container none"


def test_every_pod_runs_under_its_own_account_without_a_token():
    for container in containers() + containers(folder=HA):
        pod = container.pod
        account = pod.get("serviceAccountName")
        assert account == container.workload["metadata"]["name"], "one ServiceAccount per component"
        assert named("ServiceAccount", account, container.objects_folder).get("automountServiceAccountToken") is False
        assert pod.get("automountServiceAccountToken") is False
        # Service links would inject REDIS_PORT=tcp://... style variables next to the settings' own.
        assert pod.get("enableServiceLinks") is False
        assert 0 < pod.get("terminationGracePeriodSeconds", 0) <= 60


@pytest.mark.parametrize(
    "container", collected(lambda: containers() + ha_only(containers(folder=HA))), ids=lambda c: c.id
)
def test_every_secret_and_configmap_a_container_reads_exists(container):
    for source in container.spec.get("envFrom", []):
        named("ConfigMap", source["configMapRef"]["name"], container.objects_folder)
    for var in container.spec.get("env", []):
        if "valueFrom" in var:
            assert resolve_ref(var["valueFrom"], container.objects_folder), f"{container.id}: {var['name']} is empty"


@pytest.mark.parametrize(
    "container", collected(lambda: numcast_containers() + numcast_containers(HA)), ids=lambda c: c.id
)
def test_every_env_var_is_a_setting_the_service_reads_and_is_valid(container, tmp_path):
    from numcast.settings import from_env

    settings_cls = settings_class(container_command(container))
    known = {f.metadata["env"] for f in dataclasses.fields(settings_cls)}
    env = container_env(container)
    unknown = sorted(set(env) - known)
    assert not unknown, f"{container.id} sets env vars {settings_cls.__name__} does not read: {unknown}"
    # A password file the settings read at start-up: here, what the mounted Secret would put there.
    for var in ("REDIS_PASSWORD_FILE", "REDIS_SENTINEL_PASSWORD_FILE"):
        if var in env:
            content = mounted_file(container, env[var])
            assert content is not None, f"{container.id}: {var} is no mounted key"
            env[var] = str(tmp_path / var)
            (tmp_path / var).write_text(content)
    settings = from_env(settings_cls, env)  # raises SettingsError naming the variable
    assert settings.port == container.port("http")["containerPort"]
    if hasattr(settings, "tcp_port"):
        assert settings.tcp_port == container.port("mirror")["containerPort"]
        # Loopback by default; in a pod the control-plane connects from another pod (the NetworkPolicy admits it alone).
        assert settings.tcp_host == "0.0.0.0", f"{container.id}: TCP_HOST must be 0.0.0.0 for the mirror to be reached"


@pytest.mark.parametrize(
    "container", collected(lambda: numcast_containers() + numcast_containers(HA)), ids=lambda c: c.id
)
def test_probes_and_metrics_are_endpoints_the_service_serves(container):
    app = app_for(container_command(container))
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        http_get = container.spec[probe]["httpGet"]
        assert http_get["path"] == path
        assert serves(app, http_get["path"]), f"{container.id} {probe}: {http_get['path']} is not a route"
        assert container.port(http_get["port"]) == container.port("http")
    annotations = container.annotations
    assert annotations["prometheus.io/scrape"] == "true"
    # /metrics is on the admin port (numcast.admin): the annotation names it, and ADMIN_PORT opens it there.
    admin = container.port("admin")["containerPort"]
    assert int(annotations["prometheus.io/port"]) == admin
    assert {e["name"]: e.get("value") for e in container.spec["env"]}["ADMIN_PORT"] == str(admin)
    assert serves(app, annotations["prometheus.io/path"])


def test_redis_keeps_nothing():
    (redis,) = [c for c in containers() if c.workload["metadata"]["name"] == "redis"]
    args = redis.spec["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    # The official image's redis user; its /data is then writable through the emptyDir.
    assert redis.security("runAsUser") == 999


def test_numcast_processes_find_redis_through_the_cluster():
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    for container in numcast_containers():
        env = container_env(container)
        url = urllib.parse.urlsplit(env["REDIS_URL"])
        assert url.username is None and url.password is None, "credentials come from Secrets, never the URL"
        assert url.hostname in services, f"{container.id}: REDIS_URL names no Service"
        assert url.port in [p["port"] for p in services[url.hostname]["spec"]["ports"]]


def test_the_tcp_mirror_targets_every_worker_service():
    from numcast.settings import parse_targets

    (control,) = [c for c in numcast_containers() if container_command(c) == "control"]
    targets = parse_targets(container_env(control)["TCP_MIRROR_TARGETS"])
    workers = [c for c in numcast_containers() if container_command(c) == "worker"]
    expected = set()
    for worker in workers:
        svc = named("Service", worker.workload["metadata"]["name"])
        (mirror,) = [p for p in svc["spec"]["ports"] if p["targetPort"] == "mirror"]
        expected.add((svc["metadata"]["name"], mirror["port"]))
    assert set(targets) == expected and len(targets) == len(expected)


def test_the_mirror_reaches_workers_that_are_not_ready_yet():
    """A worker that starts while Redis is down gets ready only through the TCP mirror (see /readyz)."""
    workers = [c for c in numcast_containers() if container_command(c) == "worker"]
    assert workers
    for worker in workers:
        name = worker.workload["metadata"]["name"]
        assert named("Service", name)["spec"].get("publishNotReadyAddresses") is True
        nodeport = named("Service", f"{name}-nodeport")["spec"]
        assert not nodeport.get("publishNotReadyAddresses"), "browsers reach only pods that serve"
        assert [p["targetPort"] for p in nodeport["ports"]] == ["http"]


def test_machine_2_is_machine_1_renamed():
    import yaml

    one = (MANIFESTS / "30-machine-1.yaml").read_text().replace("machine-1", "machine-2")
    two = (MANIFESTS / "31-machine-2.yaml").read_text()
    assert list(yaml.safe_load_all(one)) == list(yaml.safe_load_all(two))


def test_the_control_plane_runs_alone():
    control = named("Deployment", "control-plane")
    assert control["spec"]["replicas"] == 1
    assert control["spec"]["strategy"]["type"] == "Recreate", "a rollout never runs two generators at once"


def test_the_alerter_runs_alone_from_an_existing_image_with_its_rules_mounted():
    from numcast_alerter import rules

    (alerter,) = [c for c in numcast_containers() if container_command(c) == "alerter"]
    assert alerter.spec["image"] in build_commands().values(), "no third image"
    deployment = named("Deployment", "alerter")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    env = container_env(alerter)
    folder, _, name = env["ALERT_RULES"].rpartition("/")
    (mount,) = [m for m in alerter.spec["volumeMounts"] if m["mountPath"] == folder]
    assert "subPath" not in mount, "a subPath mount never sees the ConfigMap change"
    volume = next(v for v in alerter.pod["volumes"] if v["name"] == mount["name"])
    text = named("ConfigMap", volume["configMap"]["name"])["data"][name]
    assert [rule.alert for rule in rules.parse(text, name)] == ["NumcastValueHigh", "NumcastStreamSilent"]
    assert env["ALERTMANAGER_URLS"].split(",") == [
        f"http://alertmanager-{n}.alertmanager-peers:9093" for n in (0, 1)
    ], "each replica of infra/monitoring's Alertmanager, same namespace"


def test_alertmanager_s_webhook_reaches_the_alerter_service():
    app = app_for("alerter")
    service = named("Service", "alerter")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8090, "http")]
    assert serves(app, "/api/alertmanager", "POST")
