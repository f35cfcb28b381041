"""infra/monitoring checked without a cluster: promtool and amtool, the generated files, RBAC, the config mounts,
the relabelling run in a real Prometheus, and the prometheus-operator objects against the CRDs' schemas."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import time
import urllib.request

import pytest
from k8s_support import MONITORING, NAMESPACE, ROOT, app_for, containers, named, objects, serves, tool

pytestmark = pytest.mark.k8s

CONFIG = MONITORING / "config"
OPERATOR = MONITORING / "operator"
# What `kubectl apply -f infra/monitoring` may create: no CRD kinds (those are in operator/), no cluster scope.
MONITORING_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service", "NetworkPolicy"}
KUBERNETES_SD_KEYS = {
    "api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata", "basic_auth",
    "authorization", "oauth2", "proxy_url", "no_proxy", "proxy_from_environment", "proxy_connect_header",
    "follow_redirects", "enable_http2", "tls_config",
}  # fmt: skip


def load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def load_all(path) -> list[dict]:
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def prometheus_yml() -> dict:
    return load(CONFIG / "prometheus.yml")


def numcast_job(config: dict) -> dict:
    """The job the rules are written for (job="numcast"); `numcast-pushed` scrapes what pods push (docs/push.md)."""
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "numcast"]
    return job


def args_of(container) -> dict[str, str]:
    """A container's `--flag=value` arguments."""
    return dict(arg.removeprefix("--").split("=", 1) for arg in container.spec.get("args", []))


def monitoring_container(name: str):
    (found,) = [c for c in containers(folder=MONITORING) if c.workload["metadata"]["name"] == name]
    return found


def run(*command: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


# The generated files


def test_the_generated_files_are_up_to_date():
    script = ROOT / "scripts" / "monitoring_manifests.py"
    spec = importlib.util.spec_from_file_location("monitoring_manifests", script)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for path, wanted in generator.render().items():
        assert path.read_text() == wanted, f"{path.relative_to(ROOT)} is stale: run python {script.relative_to(ROOT)}"


@pytest.mark.parametrize("name", ["prometheus", "alertmanager"])
def test_each_configmap_holds_the_config_files_byte_for_byte(name):
    data = named("ConfigMap", name, MONITORING)["data"]
    assert data, name
    for key, text in data.items():
        assert text == (CONFIG / key).read_text(), f"ConfigMap {name}: {key} differs from config/{key}"


def test_the_prometheusrule_holds_the_rules_file():
    (rule,) = load_all(OPERATOR / "prometheusrule.yaml")
    assert rule["spec"] == load(CONFIG / "numcast-alerts.yaml")


# What `kubectl apply -f infra/monitoring` reads


def test_kubectl_apply_reads_only_objects_of_core_kinds_in_the_namespace():
    top = [path for path in MONITORING.iterdir() if path.is_file()]
    assert top and all(path.suffix == ".yaml" for path in top)
    for path in top:
        for doc in load_all(path):
            assert doc["kind"] in MONITORING_KINDS, f"{path.name}: {doc['kind']} (CRD kinds go to operator/)"
            assert doc["metadata"]["namespace"] == NAMESPACE
    # The configuration files are not objects: kubectl, which skips subfolders without -R, must not read them.
    for path in CONFIG.iterdir():
        assert not {"apiVersion", "kind"} & set(load(path)), f"config/{path.name}"
    kinds = sorted(doc["kind"] for path in OPERATOR.iterdir() for doc in load_all(path))
    assert kinds == ["NetworkPolicy", "PodMonitor", "PrometheusRule"]


# promtool and amtool


def test_promtool_checks_the_rules():
    result = run(tool("promtool"), "check", "rules", str(CONFIG / "numcast-alerts.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_config_with_file_discovery_for_kubernetes(tmp_path):
    import yaml

    # Debian's promtool is built without Kubernetes discovery; everything else it checks as it stands.
    config = prometheus_yml()
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for name in config["rule_files"]:
        (tmp_path / name).write_text((CONFIG / name).read_text())
    result = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_discovery_lists_the_pods_of_the_namespace_only():
    job = numcast_job(prometheus_yml())
    (sd,) = job["kubernetes_sd_configs"]
    assert set(sd) <= KUBERNETES_SD_KEYS
    assert sd["role"] == "pod"
    assert sd["namespaces"] == {"names": [NAMESPACE]}, "one namespace: a Role is enough"
    assert job["job_name"] == "numcast", "the rules select job=numcast"


def test_amtool_checks_the_config():
    result = run(tool("amtool"), "check-config", str(CONFIG / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "labels, receiver",
    [
        (["alertname=NumcastWorkerDown", "severity=critical", "worker=machine-1"], "numcast-alerter"),
        (["alertname=NumcastValueHigh", "severity=warning"], "numcast-alerter"),
        (["alertname=Watchdog", "severity=none"], "null"),
    ],
)
def test_alertmanager_routes_alerts_to_the_alerter_and_the_watchdog_nowhere(labels, receiver):
    config = f"--config.file={CONFIG / 'alertmanager.yml'}"
    result = run(tool("amtool"), "config", "routes", "test", config, *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_alertmanager_and_the_alerter_find_each_other_by_their_services():
    from urllib.parse import urlsplit

    (webhook,) = {r["name"]: r for r in load(CONFIG / "alertmanager.yml")["receivers"]}["numcast-alerter"][
        "webhook_configs"
    ]
    url = urlsplit(webhook["url"])
    alerter = named("Service", url.hostname)  # in infra/k8s
    assert url.port in [p["port"] for p in alerter["spec"]["ports"]]
    assert serves(app_for("alerter"), url.path, "POST")
    url = urlsplit(named("ConfigMap", "alerter")["data"]["ALERTMANAGER_URL"])
    alertmanager = named("Service", url.hostname, MONITORING)
    assert url.port in [p["port"] for p in alertmanager["spec"]["ports"]]


def test_the_alerter_webhook_gets_resolved_alerts_too():
    receivers = {r["name"]: r for r in load(CONFIG / "alertmanager.yml")["receivers"]}
    (webhook,) = receivers["numcast-alerter"]["webhook_configs"]
    assert {key: webhook[key] for key in ("url", "send_resolved")} == {
        "url": "http://alerter:8090/api/alertmanager",
        "send_resolved": True,
    }
    assert set(webhook) == {"url", "send_resolved", "http_config"}, "http_config: its token (test_k8s_tokens)"
    assert set(receivers["null"]) == {"name"}


@pytest.mark.parametrize("name, command", [("prometheus", "promtool"), ("alertmanager", "amtool")])
def test_the_images_are_the_versions_the_checks_run(name, command):
    image = monitoring_container(name).spec["image"]
    output = run(tool(command), "--version")
    version = re.search(r"version (\d+\.\d+\.\d+)", output.stdout + output.stderr).group(1)
    assert image == f"prom/{name}:v{version}", f"{command} {version} checks the files; {image} would run them"
    assert monitoring_container(name).labels["app.kubernetes.io/version"] == version


# RBAC, accounts, mounts


def test_prometheus_may_read_pods_of_its_namespace_and_nothing_else():
    assert not [d for d in objects(folder=MONITORING) if d["kind"].startswith("Cluster")], "no cluster scope"
    role = named("Role", "prometheus", MONITORING)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = named("RoleBinding", "prometheus", MONITORING)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prometheus"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": NAMESPACE}]


def test_only_prometheus_mounts_a_service_account_token():
    for container in containers(folder=MONITORING):
        name = container.workload["metadata"]["name"]
        assert container.pod["serviceAccountName"] == name
        wanted = name == "prometheus"
        assert named("ServiceAccount", name, MONITORING)["automountServiceAccountToken"] is wanted
        assert container.pod["automountServiceAccountToken"] is wanted
        assert container.pod["enableServiceLinks"] is False


@pytest.mark.parametrize("name, storage", [("prometheus", "storage.tsdb.path"), ("alertmanager", "storage.path")])
def test_each_server_reads_its_configmap_and_writes_to_an_emptydir(name, storage):
    container = monitoring_container(name)
    args, mounts = args_of(container), container.mounts()
    folder, _, file = args["config.file"].rpartition("/")
    assert mounts[folder]["configMap"]["name"] == name and mounts[folder]["readOnly"]
    data = named("ConfigMap", name, MONITORING)["data"]
    assert file in data
    if name == "prometheus":
        assert set(load(CONFIG / file)["rule_files"]) <= set(data), "the rules sit beside prometheus.yml"
    assert "emptyDir" in mounts[args[storage]]
    assert int(args["web.listen-address"].rpartition(":")[2]) == container.port("web")["containerPort"]
    for probe, path in (("readinessProbe", "/-/ready"), ("livenessProbe", "/-/healthy")):
        assert container.spec[probe]["httpGet"] == {"path": path, "port": "web"}


def test_prometheus_sends_to_the_alertmanager_service():
    (alertmanagers,) = prometheus_yml()["alerting"]["alertmanagers"]
    (static,) = alertmanagers["static_configs"]
    (target,) = static["targets"]
    host, _, port = target.partition(":")
    service = named("Service", host, MONITORING)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]


# The relabelling, run by a real Prometheus on the targets Kubernetes would give infra/k8s's pods


def sanitized(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered_targets() -> list[dict]:
    """The targets of role pod for every pod template of infra/k8s, as file_sd groups, plus one ended pod."""
    groups = []
    for container in containers(init=False):
        name = container.workload["metadata"]["name"]
        meta = {
            "__meta_kubernetes_namespace": container.workload["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": f"{name}-7d9f8c6b5-x2x4q",
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_container_name": container.spec["name"],
        }
        for key, value in container.labels.items():
            meta[f"__meta_kubernetes_pod_label_{sanitized(key)}"] = value
        for key, value in container.annotations.items():
            meta[f"__meta_kubernetes_pod_annotation_{sanitized(key)}"] = value
        # Role pod: one target per declared container port, at the pod's address (loopback here: never scraped).
        for port in container.spec.get("ports", []):
            labels = {**meta, "__meta_kubernetes_pod_container_port_name": port.get("name", "")}
            labels["__meta_kubernetes_pod_container_port_number"] = str(port["containerPort"])
            groups.append({"targets": [f"127.0.0.1:{port['containerPort']}"], "labels": labels})
    ended = next(g for g in groups if g["labels"].get("__meta_kubernetes_pod_annotation_prometheus_io_scrape"))
    groups.append({**ended, "labels": {**ended["labels"], "__meta_kubernetes_pod_phase": "Failed"}})
    return groups


def active_targets(tmp_path) -> list[dict]:
    """Prometheus' active targets, with prometheus.yml's relabelling and file discovery instead of Kubernetes'."""
    import yaml

    from numcast.local import free_port, stop, wait_http

    config = prometheus_yml()
    config.pop("rule_files"), config.pop("alerting")
    config["global"]["scrape_interval"] = "1h"  # the targets are fake: no scrape during the test
    job = numcast_job(config)
    config["scrape_configs"] = [job]
    job.pop("kubernetes_sd_configs")
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    (tmp_path / "targets.json").write_text(json.dumps(discovered_targets()))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    process = subprocess.Popen(command)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", 60, process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/api/v1/targets?state=any", timeout=5) as response:
                data = json.load(response)["data"]
            if data["activeTargets"] or data["droppedTargets"]:
                return data["activeTargets"]
            time.sleep(0.2)
        pytest.fail("Prometheus discovered nothing")
    finally:
        stop(process)


def scraped_pods() -> list:
    return [c for c in containers(init=False) if c.annotations.get("prometheus.io/scrape") == "true"]


def test_relabelling_scrapes_each_annotated_pod_once_with_the_labels_the_rules_use(tmp_path):
    from numcast.monitoring import Target

    active = active_targets(tmp_path)
    by_pod = {t["labels"]["pod"]: t for t in active}
    assert len(by_pod) == len(active), "one target per pod, whatever ports it declares"
    wanted = scraped_pods()
    assert wanted and len(active) == len(wanted), "annotated pods only, and never an ended one"
    for container in wanted:
        name = container.workload["metadata"]["name"]
        target = by_pod[f"{name}-7d9f8c6b5-x2x4q"]
        port, path = container.annotations["prometheus.io/port"], container.annotations["prometheus.io/path"]
        assert target["scrapeUrl"] == f"http://127.0.0.1:{port}{path}"
        labels = target["labels"]
        assert labels.pop("instance") == f"127.0.0.1:{port}"
        assert labels.pop("namespace") == NAMESPACE and labels.pop("job") == "numcast"
        # `numcast up --monitoring` labels its local processes alike, so the rules behave the same there.
        local = Target(container.labels["app.kubernetes.io/component"], name, 0).labels()
        assert labels == {**local, "pod": labels["pod"]}, container.id


# prometheus-operator: the CRDs' schemas (a strict subset), and the same targets and labels as prometheus.yml

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
RELABEL_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase"]
RELABEL_ACTIONS += ["uppercase", "keepequal", "dropequal"]


def strict(properties: dict, *required: str) -> dict:
    """A JSON schema object that allows `properties` only, as a CRD's structural schema with strict validation."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def resource(kind: str, spec: dict) -> dict:
    metadata = {"type": "object", "required": ["name", "namespace", "labels"]}
    version = {"const": "monitoring.coreos.com/v1"}
    return strict({"apiVersion": version, "kind": {"const": kind}, "metadata": metadata, "spec": spec}, "spec")


RULE = strict(
    {
        "alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": ["string", "integer"]},
        "for": {"type": "string", "pattern": DURATION}, "keep_firing_for": {"type": "string", "pattern": DURATION},
        "labels": STRINGS, "annotations": STRINGS,
    },
    "expr",
)  # fmt: skip
GROUP = strict(
    {
        "name": {"type": "string", "minLength": 1}, "interval": {"type": "string", "pattern": DURATION},
        "limit": {"type": "integer"}, "labels": STRINGS, "rules": array(RULE),
    },
    "name",
)  # fmt: skip
RELABELING = strict(
    {
        "sourceLabels": array({"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}),
        "separator": {"type": "string"}, "targetLabel": {"type": "string"}, "regex": {"type": "string"},
        "modulus": {"type": "integer"}, "replacement": {"type": "string"},
        "action": {"enum": RELABEL_ACTIONS + [a.capitalize() for a in RELABEL_ACTIONS]},
    }
)  # fmt: skip
EXPRESSION = strict(
    {
        "key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": array({"type": "string"}),
    },
    "key", "operator",
)  # fmt: skip
ENDPOINT = strict(
    {
        "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
        "interval": {"type": "string", "pattern": DURATION}, "scrapeTimeout": {"type": "string", "pattern": DURATION},
        "honorLabels": {"type": "boolean"}, "relabelings": array(RELABELING), "metricRelabelings": array(RELABELING),
    }
)  # fmt: skip
SCHEMAS = {
    "PrometheusRule": resource("PrometheusRule", strict({"groups": array(GROUP)}, "groups")),
    "PodMonitor": resource(
        "PodMonitor",
        strict(
            {
                "selector": strict({"matchLabels": STRINGS, "matchExpressions": array(EXPRESSION)}),
                "namespaceSelector": strict({"any": {"type": "boolean"}, "matchNames": array({"type": "string"})}),
                "jobLabel": {"type": "string"}, "podTargetLabels": array({"type": "string"}),
                "podMetricsEndpoints": array(ENDPOINT),
            },
            "selector",
        ),
    ),
}  # fmt: skip


# networkpolicy.yaml is a core kind: test_k8s_network_policies validates it against the 1.31 schema.
@pytest.mark.parametrize(
    "path", sorted(p for p in OPERATOR.iterdir() if p.name != "networkpolicy.yaml"), ids=lambda path: path.name
)
def test_operator_objects_follow_the_crd_schemas(path):
    import jsonschema

    for doc in load_all(path):
        errors = list(jsonschema.Draft7Validator(SCHEMAS[doc["kind"]]).iter_errors(doc))
        assert not errors, [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "numcast"


def podmonitor() -> dict:
    (found,) = load_all(OPERATOR / "podmonitor.yaml")
    return found


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions with In/NotIn) matches `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        inside = labels.get(expression["key"]) in expression["values"]
        if inside != (expression["operator"] == "In"):
            return False
    return True


def test_the_podmonitor_scrapes_the_pods_the_annotations_name_on_the_same_port():
    spec = podmonitor()["spec"]
    selected = [c for c in containers(init=False) if selects(spec["selector"], c.labels)]
    assert {c.id for c in selected} == {c.id for c in scraped_pods()}
    (endpoint,) = spec["podMetricsEndpoints"]
    for container in selected:
        assert container.port(endpoint["port"])["containerPort"] == int(container.annotations["prometheus.io/port"])
        assert endpoint["path"] == container.annotations["prometheus.io/path"]
    assert endpoint["interval"] == prometheus_yml()["global"]["scrape_interval"]


def test_the_podmonitor_labels_targets_as_prometheus_yml_does():
    job = numcast_job(prometheus_yml())
    camel = {"source_labels": "sourceLabels", "target_label": "targetLabel", "regex": "regex", "action": "action"}
    camel |= {"replacement": "replacement", "separator": "separator"}
    # The operator sets namespace and pod itself; the rest of prometheus.yml's labels come from relabelings.
    wanted = [
        {camel[key]: value for key, value in rule.items()}
        for rule in job["relabel_configs"]
        if not rule.get("target_label", "__").startswith("__") and rule["target_label"] not in ("namespace", "pod")
    ]
    (endpoint,) = podmonitor()["spec"]["podMetricsEndpoints"]
    relabelings = endpoint["relabelings"]
    assert relabelings[:-1] == wanted
    assert relabelings[-1] == {"targetLabel": "job", "replacement": job["job_name"]}
