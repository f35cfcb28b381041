"""The NetworkPolicies, evaluated offline: each flow the code needs is allowed by exactly one pair, nothing else is.

The flows are derived from the manifests and the configuration (addresses in the env vars, Prometheus' alerting
and scrape configuration, Alertmanager's webhook, the NodePort Services), resolved through the Services to pods
and ports; network_policy.py evaluates the policies over the pods the manifests create, plus strangers: pods
outside the namespace carrying the same labels, a pod in the namespace that is none of ours, an address outside
the cluster.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse

import pytest
from k8s_support import (
    HA,
    MANIFESTS,
    MONITORING,
    NAMESPACE,
    ROOT,
    WORKLOAD_KINDS,
    container_env,
    containers,
    documents,
    named,
    numcast_containers,
    objects,
)
from network_policy import EGRESS, INGRESS, Cluster, Endpoint, Flow, Port, label_selector_matches

pytestmark = pytest.mark.k8s

OPERATOR = MONITORING / "operator"
ELSEWHERE = "elsewhere"  # another namespace, where every numcast pod has a look-alike with the same labels
KUBE_DNS = "kube-system/kube-dns"
# Minikube's API server with its default (docker) driver: the endpoint of the Service `kubernetes`.
API_SERVER = Endpoint("kube-apiserver", "192.168.49.2", ports=(Port(8443),))
# A browser through a NodePort, and any server on the internet.
OUTSIDE = Endpoint("outside", "203.0.113.7", ports=(Port(80), Port(443), Port(6443), Port(8443)))
# Ports nothing listens on: a rule that admits them is wider than any flow.
UNDECLARED = (Port(65000, "TCP"), Port(65000, "UDP"))
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "http": 80, "https": 443}
# Settings that name an address the service only writes into links, never connects to.
LINKS = {"EXTERNAL_URL"}


# The cluster: the pods of infra/k8s and infra/monitoring, and strangers


def pod_ips():
    """Addresses from Minikube's pod network, one per pod."""
    return (str(ip) for ip in ipaddress.ip_network("10.244.0.0/16").hosts())


def workload_pods(folders=(MANIFESTS, MONITORING)) -> list[Endpoint]:
    """One pod per workload (its replicas share labels and ports), named after the workload; a StatefulSet's
    replicas, which talk to each other by name, are each a pod of their own (`alertmanager-0`, `alertmanager-1`)."""
    ips, pods = pod_ips(), []
    for folder in folders:
        for workload in objects(folder=folder):
            if workload["kind"] in WORKLOAD_KINDS:
                template = workload["spec"]["template"]
                ports = tuple(
                    Port(p["containerPort"], p.get("protocol", "TCP"), p.get("name"))
                    for container in template["spec"]["containers"]
                    for p in container.get("ports", [])
                )
                name, namespace = workload["metadata"]["name"], workload["metadata"]["namespace"]
                names = [name]
                if workload["kind"] == "StatefulSet":
                    names = [f"{name}-{n}" for n in range(workload["spec"]["replicas"])]
                for pod in names:
                    pods.append(Endpoint(pod, next(ips), namespace, template["metadata"]["labels"], ports))
    return pods


def strangers(pods: list[Endpoint]) -> list[Endpoint]:
    """Look-alikes elsewhere, kube-dns and a neighbour, a pod in the namespace that is none of ours, the outside."""
    ips = (str(ip) for ip in ipaddress.ip_network("10.245.0.0/16").hosts())
    found = [Endpoint(f"{ELSEWHERE}/{p.name}", next(ips), ELSEWHERE, p.labels, p.ports) for p in pods]
    dns_ports = (Port(53, "UDP", "dns"), Port(53, "TCP", "dns-tcp"), Port(9153, "TCP", "metrics"))
    found.append(Endpoint(KUBE_DNS, next(ips), "kube-system", {"k8s-app": "kube-dns"}, dns_ports))
    found.append(Endpoint(f"{ELSEWHERE}/kube-dns", next(ips), ELSEWHERE, {"k8s-app": "kube-dns"}, dns_ports))
    found.append(Endpoint("kube-system/other", next(ips), "kube-system", {"k8s-app": "other"}, dns_ports))
    found.append(Endpoint(f"{NAMESPACE}/debug", next(ips), NAMESPACE, {"run": "debug"}, (Port(8080),)))
    return [*found, API_SERVER, OUTSIDE]


def policies(*paths) -> list[dict]:
    import yaml

    return [
        doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == "NetworkPolicy"
    ]


def namespaces() -> dict[str, dict]:
    return {NAMESPACE: named("Namespace", NAMESPACE)["metadata"]["labels"], "kube-system": {}, ELSEWHERE: {}}


@functools.cache
def cluster() -> Cluster:
    """infra/k8s and infra/monitoring applied, with their policies."""
    pods = workload_pods()
    every = policies(*(path for folder in (MANIFESTS, MONITORING) for path in sorted(folder.glob("*.yaml"))))
    return Cluster(namespaces(), pods + strangers(pods), every)


def ours(endpoint: Endpoint) -> bool:
    return endpoint.namespace == NAMESPACE


# The flows the code needs, derived


def services() -> dict[str, dict]:
    return {s["metadata"]["name"]: s for folder in (MANIFESTS, MONITORING) for s in objects("Service", folder)}


def service_name(host: str) -> str | None:
    """The Service a host name means in this namespace (`redis`, `redis.numcast.svc`), or None."""
    match = re.fullmatch(rf"([a-z0-9-]+)(\.{NAMESPACE}(\.svc(\.cluster\.local)?)?)?", host)
    return match.group(1) if match and match.group(1) in services() else None


def pod_name(host: str) -> tuple[str, str] | None:
    """(pod, headless Service) for a StatefulSet pod's own DNS name (`alertmanager-0.alertmanager-peers`), or None."""
    match = re.fullmatch(rf"([a-z0-9-]+)\.([a-z0-9-]+)(\.{NAMESPACE}(\.svc(\.cluster\.local)?)?)?", host)
    if not match or match.group(1) not in cluster().endpoints or match.group(2) not in services():
        return None
    assert services()[match.group(2)]["spec"].get("clusterIP") == "None", f"{host}: only a headless Service names pods"
    return match.group(1), match.group(2)


def to_service(client: str, host: str, port: int, why: str, protocol: str = "TCP") -> dict[Flow, str]:
    """`client` connecting to host:port: through the Service, to each pod it selects on the target port (to the
    one pod, for a pod's own name)."""
    one = pod_name(host)
    name = one[1] if one else service_name(host)
    assert name, f"{client} connects to {host}:{port} ({why}), no Service of {NAMESPACE}: add a flow for it"
    service = services()[name]
    (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port and p.get("protocol", "TCP") == protocol]
    target = entry.get("targetPort", port)
    flows = {}
    for pod in cluster().endpoints.values():
        if one and pod.name != one[0]:
            continue
        if ours(pod) and label_selector_matches({"matchLabels": service["spec"]["selector"]}, pod.labels):
            (resolved,) = [p for p in pod.ports if target in (p.name, p.number) and p.protocol == protocol]
            flows[Flow(client, pod.name, resolved.number, protocol)] = why
    assert flows, f"Service {name} selects no pod"
    for dns_protocol in ("UDP", "TCP"):
        flows[Flow(client, KUBE_DNS, 53, dns_protocol)] = "resolves a Service name"
    return flows


def addresses(value: str) -> list[tuple[str, int]]:
    """The host:port pairs a setting names: URLs (with their scheme's default port) and host:port lists."""
    found = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        if "://" in item:
            url = urllib.parse.urlsplit(item)
            found.append((url.hostname, url.port or DEFAULT_PORTS[url.scheme]))
        elif re.fullmatch(r"[a-z0-9.-]+:\d+", item):
            host, _, port = item.rpartition(":")
            found.append((host, int(port)))
    return found


def mounted_config(name: str) -> dict:
    """The configuration file the monitoring workload `name` reads: its --config.file, from its ConfigMap."""
    import yaml

    (container,) = [c for c in containers(folder=MONITORING) if c.workload["metadata"]["name"] == name]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container.spec["args"])
    folder, _, file = args["config.file"].rpartition("/")
    configmap = container.mounts()[folder]["configMap"]["name"]
    return yaml.safe_load(named("ConfigMap", configmap, MONITORING)["data"][file])


def kept(job: dict, namespaces: list[str]) -> list[tuple[str, int]]:
    """(pod, port) a job without the annotations keeps: its `keep` rules on the component and the port's name."""
    rules = {
        tuple(r["source_labels"]): re.compile(r["regex"])
        for r in job.get("relabel_configs", [])
        if r.get("action") == "keep" and len(r.get("source_labels", [])) == 1
    }
    component = rules.get(("__meta_kubernetes_pod_label_app_kubernetes_io_component",), re.compile(".*"))
    port_name = rules.get(("__meta_kubernetes_pod_container_port_name",), re.compile(".*"))
    return [
        (c.workload["metadata"]["name"], port["containerPort"])
        for c in containers(init=False)
        if c.workload["metadata"]["namespace"] in namespaces
        and component.fullmatch(c.labels.get("app.kubernetes.io/component", ""))
        for port in c.spec.get("ports", [])
        if port_name.fullmatch(port.get("name", ""))
    ]


def scraped(namespaces: list[str]) -> list[tuple[str, int]]:
    """(pod, port) the relabelling keeps: prometheus.io/scrape and prometheus.io/port (test_k8s_monitoring runs it)."""
    return [
        (c.workload["metadata"]["name"], int(c.annotations["prometheus.io/port"]))
        for c in containers(init=False)
        if c.annotations.get("prometheus.io/scrape") == "true" and c.workload["metadata"]["namespace"] in namespaces
    ]


def prometheus_flows() -> dict[Flow, str]:
    """Prometheus' connections: its Alertmanagers, its scrape targets and, for discovery, the API server."""
    config = mounted_config("prometheus")
    flows = {}
    for alertmanagers in config.get("alerting", {}).get("alertmanagers", []):
        for static in alertmanagers.get("static_configs", []):
            for target in static["targets"]:
                flows |= to_service("prometheus", *addresses(target)[0], "alerting.alertmanagers")
    for job in config["scrape_configs"]:
        assert set(job) & {"static_configs", "kubernetes_sd_configs"}, f"job {job['job_name']}: unknown targets"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                flows |= to_service("prometheus", *addresses(target)[0], f"job {job['job_name']}")
        for sd in job.get("kubernetes_sd_configs", []):
            assert sd["role"] == "pod" and "api_server" not in sd, "in-cluster pod discovery only"
            flows[Flow("prometheus", API_SERVER.name, API_SERVER.ports[0].number)] = "pod discovery"
            annotated = any(
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape" in r.get("source_labels", [])
                for r in job.get("relabel_configs", [])
            )
            if annotated:
                for pod, port in scraped(sd["namespaces"]["names"]):
                    flows[Flow("prometheus", pod, port)] = "scrape"
            else:  # the pushed series: the control-plane's http port (docs/push.md)
                for pod, port in kept(job, sd["namespaces"]["names"]):
                    flows[Flow("prometheus", pod, port)] = f"job {job['job_name']}"
    return flows


def alertmanager_flows() -> dict[Flow, str]:
    """Each Alertmanager replica's connections: the webhooks of its receivers, and its cluster peers (gossip on
    TCP and UDP), from its --cluster.peer arguments."""
    (container,) = [c for c in containers(folder=MONITORING) if c.workload["metadata"]["name"] == "alertmanager"]
    replicas = [e.name for e in cluster().endpoints.values() if ours(e) and e.name.startswith("alertmanager-")]
    peers = [arg.removeprefix("--cluster.peer=") for arg in container.spec["args"] if arg.startswith("--cluster.peer=")]
    flows = {}
    for replica in replicas:
        for receiver in mounted_config("alertmanager")["receivers"]:
            assert set(receiver) <= {"name", "webhook_configs"}, f"receiver {receiver['name']}: add its flow"
            for webhook in receiver.get("webhook_configs", []):
                flows |= to_service(replica, *addresses(webhook["url"])[0], f"receiver {receiver['name']}")
        for peer in peers:
            for protocol in ("TCP", "UDP"):
                gossip = to_service(replica, *addresses(peer)[0], "--cluster.peer", protocol)
                flows |= {flow: why for flow, why in gossip.items() if flow.server != replica}  # itself: skipped
    return flows


def numcast_flows() -> dict[Flow, str]:
    """What the numcast processes connect to: every address in their env vars (a Service of the namespace)."""
    flows = {}
    for container in numcast_containers():
        for var, value in container_env(container).items():
            if var not in LINKS:
                for host, port in addresses(value):
                    flows |= to_service(container.workload["metadata"]["name"], host, port, var)
    return flows


def public_doors() -> set[tuple[str, int]]:
    """(pod, port) of every NodePort Service: reachable from anywhere."""
    doors = set()
    for service in services().values():
        if service["spec"]["type"] == "NodePort":
            for entry in service["spec"]["ports"]:
                flows = to_service(OUTSIDE.name, service["metadata"]["name"], entry["port"], "NodePort")
                doors |= {(f.server, f.port) for f in flows if f.server != KUBE_DNS}  # a browser resolves elsewhere
    return doors


@functools.cache
def needed() -> dict[Flow, str]:
    """Every flow the configuration needs, with why; one from outside the cluster to each public door."""
    flows = numcast_flows() | prometheus_flows() | alertmanager_flows()
    for server, port in public_doors():
        flows[Flow(OUTSIDE.name, server, port)] = "NodePort"
    return flows


@functools.cache
def allowed(world: Cluster | None = None) -> frozenset[Flow]:
    """Every flow the policies allow between two endpoints where at least one is a pod of the namespace."""
    world = world or cluster()
    found = set()
    for client in world.endpoints.values():
        for server in world.endpoints.values():
            if client is server or not (ours(client) or ours(server)):
                continue
            for port in server.ports + UNDECLARED:
                flow = Flow(client.name, server.name, port.number, port.protocol)
                if world.allows(flow):
                    found.add(flow)
    return frozenset(found)


def flow_name(policy: str) -> str:
    return re.sub(r"-(ingress|egress)$", "", policy)


def public(policy_name: str) -> bool:
    """A policy with an ingress rule that admits every source (no `from`)."""
    (policy,) = [p for p in cluster().policies if p["metadata"]["name"] == policy_name]
    return any(not rule.get("from") for rule in policy["spec"].get("ingress", []))


# The tests


def test_default_deny_isolates_every_pod_of_the_namespace_both_ways():
    deny = [p for p in cluster().policies if p["metadata"]["name"] == "default-deny"]
    assert [p["metadata"]["namespace"] for p in deny] == [NAMESPACE]
    assert deny[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # In infra/k8s, in a file `kubectl apply -f` reads before any pod's: no pod starts before the policies.
    path = MANIFESTS / "08-network-policies.yaml"
    assert deny[0] in policies(path)
    assert all(path.name < name for name, doc in documents() if doc["kind"] in WORKLOAD_KINDS)


def test_every_other_policy_is_one_half_of_a_flow_named_after_it():
    for policy in cluster().policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        if name == "default-deny":
            continue
        match = re.fullmatch(r"([a-z0-9-]+)-(ingress|egress)", name)
        assert match, f"{name}: call it <flow>-ingress or <flow>-egress"
        direction = match.group(2).capitalize()
        assert spec["policyTypes"] == [direction], f"{name} restricts {spec['policyTypes']}"
        assert set(spec) == {"podSelector", "policyTypes", match.group(2)}, f"{name}: {sorted(spec)}"
        assert all(rule.get("ports") for rule in spec[match.group(2)]), f"{name}: name the ports of every rule"


def test_the_flows_the_code_needs_are_derived_from_the_configuration():
    why = {(f.client, f.server, f.port): reason for f, reason in needed().items()}
    # A few the issue names, to show the derivation sees them; the other tests check all of them.
    assert why[("control-plane", "redis", 6379)] == "REDIS_URL"
    assert why[("control-plane", "machine-2", 9000)] == "TCP_MIRROR_TARGETS"
    assert why[("alerter", "alertmanager-1", 9093)] == "ALERTMANAGER_URLS"
    assert why[("alertmanager-0", "alerter", 8090)] == "receiver numcast-alerter"
    assert why[("alertmanager-0", "alertmanager-1", 9094)] == "--cluster.peer"
    assert why[("prometheus", "alertmanager-1", 9093)] == "alerting.alertmanagers"
    assert why[("prometheus", "control-plane", 9180)] == "scrape"  # ADMIN_PORT: /metrics
    assert why[("prometheus", "control-plane", 8000)] == "job numcast-pushed"
    assert why[("outside", "machine-1", 8080)] == "NodePort"
    assert not [f for f in needed() if f.client == "redis"], "Redis opens no connection"


def pair_errors(world: Cluster, flows: dict[Flow, str]) -> list[str]:
    """Each of `flows` not allowed by exactly one egress and one ingress policy of one flow's pair."""
    wrong = []
    for flow, why in flows.items():
        egress, ingress = world.admitting(EGRESS, flow), world.admitting(INGRESS, flow)
        client, server = world.endpoints[flow.client], world.endpoints[flow.server]
        for side, names, isolated in (("egress", egress, ours(client)), ("ingress", ingress, ours(server))):
            if isolated and (names is None or len(names) != 1):
                wrong.append(f"{flow} ({why}): {side} allowed by {names}, want exactly one policy")
        # Between two pods of ours, the two halves are one flow's pair, or the server's door is open to all.
        pair = [names[0] for names in (egress, ingress) if names and len(names) == 1]
        one_flow = len(pair) < 2 or flow_name(pair[0]) == flow_name(pair[1]) or public(pair[1])
        if ours(client) and ours(server) and not one_flow:
            wrong.append(f"{flow} ({why}): {pair[0]} and {pair[1]} are not one flow's pair")
    return wrong


def test_every_needed_flow_is_allowed_by_exactly_one_pair():
    wrong = pair_errors(cluster(), needed())
    assert not wrong, "\n".join(wrong)


def unexpected(world: Cluster, flows: dict[Flow, str]) -> tuple[list[str], list[str]]:
    """(allowed and not needed, needed and not allowed), the public doors open to every outsider."""
    outsiders = [e.name for e in world.endpoints.values() if not ours(e)]
    expected = set(flows) | {Flow(c, s, p) for s, p in public_doors() for c in outsiders}
    return sorted(map(str, allowed(world) - expected)), sorted(map(str, expected - allowed(world)))


def test_nothing_else_is_allowed():
    extra, missing = unexpected(cluster(), needed())
    assert not extra, "allowed, and no flow needs it:\n" + "\n".join(extra)
    assert not missing, "needed, and not allowed:\n" + "\n".join(missing)


@pytest.mark.parametrize("direction", [INGRESS, EGRESS])
def test_each_half_admits_only_its_flows_on_its_own(direction):
    # Were the other side open (a pod under someone else's allow-all egress policy), this half is still the gate.
    world = cluster()
    side = "server" if direction == INGRESS else "client"
    admitted = set()
    for client in world.endpoints.values():
        for server in world.endpoints.values():
            for port in server.ports + UNDECLARED:
                flow = Flow(client.name, server.name, port.number, port.protocol)
                if client is not server and world.admitting(direction, flow):
                    admitted.add(flow)
    expected = {f for f in needed() if ours(world.endpoints[getattr(f, side)])}
    if direction == INGRESS:
        expected |= {Flow(c, s, p) for s, p in public_doors() for c in world.endpoints if c != s}
    extra = sorted(map(str, admitted - expected))
    assert not extra, f"{direction} admits more than the flows need:\n" + "\n".join(extra)
    assert admitted >= expected


def test_every_policy_allows_some_needed_flow():
    world, used = cluster(), set()
    for flow in needed():
        for direction in (EGRESS, INGRESS):
            used.update(world.admitting(direction, flow) or [])
    unused = {p["metadata"]["name"] for p in world.policies} - used - {"default-deny"}
    assert not unused, f"policies that allow nothing the configuration needs: {sorted(unused)}"


@pytest.mark.parametrize(
    "server, port, clients",
    [
        ("redis", 6379, {"control-plane", "machine-1", "machine-2", "alerter"}),
        ("machine-1", 9000, {"control-plane"}),
        ("machine-2", 9000, {"control-plane"}),
        ("control-plane", 8000, {"prometheus"}),  # the pushed series; the page is a port-forward's
        ("control-plane", 9180, {"prometheus"}),  # ADMIN_PORT: /metrics and the full /api/status
        ("machine-1", 9180, {"prometheus"}),
        ("alerter", 9180, {"prometheus"}),
        ("alerter", 8090, {"alertmanager-0", "alertmanager-1"}),
        ("alertmanager-0", 9093, {"prometheus", "alerter"}),
        ("alertmanager-1", 9094, {"alertmanager-0"}),
        ("prometheus", 9090, set()),
    ],
)
def test_who_may_reach_a_port(server, port, clients):
    world = cluster()
    found = {c for c in world.endpoints if c != server and world.allows(Flow(c, server, port))}
    assert found == clients


def test_the_dashboards_are_open_to_everyone_but_the_namespace_s_own_pods_need_a_flow():
    world = cluster()
    found = {c for c in world.endpoints if world.allows(Flow(c, "machine-1", 8080))}
    assert {"outside", f"{ELSEWHERE}/control-plane", KUBE_DNS} <= found
    # Not even Prometheus: it scrapes the admin port (9180), not the dashboard's.
    assert found & {e.name for e in world.endpoints.values() if ours(e)} == set()


def test_dns_goes_to_kube_dns_in_kube_system_only_and_redis_resolves_nothing():
    world = cluster()
    resolving = {c for c in world.endpoints if world.allows(Flow(c, KUBE_DNS, 53, "UDP")) and ours(world.endpoints[c])}
    assert resolving == {f.client for f in needed() if f.server == KUBE_DNS}
    assert "redis" not in resolving and f"{NAMESPACE}/debug" not in resolving
    assert not world.allows(Flow("control-plane", f"{ELSEWHERE}/kube-dns", 53, "UDP")), "a look-alike elsewhere"


def test_the_api_server_is_allowed_by_one_address_and_the_docs_say_how_to_find_yours():
    (policy,) = [p for p in cluster().policies if p["metadata"]["name"] == "prometheus-to-kube-apiserver-egress"]
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            assert ipaddress.ip_network(peer["ipBlock"]["cidr"]).num_addresses == 1, "one address, no range"
    peers = [peer for p in cluster().policies for rule in p["spec"].get("egress", []) for peer in rule.get("to", [])]
    assert [peer for peer in peers if "ipBlock" in peer] == policy["spec"]["egress"][0]["to"], "the only ipBlock"
    page = (ROOT / "docs" / "security.md").read_text()
    assert "kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes" in page


def readme_flows() -> set[str]:
    """The flow names in docs/security.md's table of network policies."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text[text.index("## Network policies") :]
    section = section[: section.index("\n##")]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.MULTILINE))


def test_the_docs_list_every_flow():
    flows = {flow_name(p["metadata"]["name"]) for world in (cluster(), ha_cluster()) for p in world.policies}
    assert readme_flows() == flows


# The HA overlay (infra/k8s-ha): the Redis nodes and their Sentinels instead of one Redis


@functools.cache
def ha_cluster() -> Cluster:
    """`kubectl apply -k infra/k8s-ha` and infra/monitoring, with their policies."""
    pods = workload_pods((HA, MONITORING))
    every = objects("NetworkPolicy", HA) + policies(*sorted(MONITORING.glob("*.yaml")))
    return Cluster(namespaces(), pods + strangers(pods), every)


def redis_nodes(world: Cluster) -> dict[str, dict[str, int]]:
    """{pod: {port name: number}} of the Redis StatefulSet's pods."""
    return {
        e.name: {p.name: p.number for p in e.ports}
        for e in world.endpoints.values()
        if ours(e) and e.labels.get("app.kubernetes.io/name") == "redis"
    }


@functools.cache
def ha_needed() -> dict[Flow, str]:
    """The base's flows, with the one Redis replaced: each numcast process asks each Sentinel it is given
    (REDIS_SENTINELS, the pods' own names) and connects to whichever node they name as primary; the nodes replicate
    from each other, each Sentinel watches every node and talks to the other Sentinels, and all resolve names."""
    world = ha_cluster()
    nodes = redis_nodes(world)
    assert len(nodes) == named("StatefulSet", "redis", HA)["spec"]["replicas"]
    flows = {flow: why for flow, why in needed().items() if flow.server != "redis"}
    dns = lambda client, why: {Flow(client, KUBE_DNS, 53, p): why for p in ("UDP", "TCP")}  # noqa: E731
    for container in numcast_containers(HA):
        client, env = container.workload["metadata"]["name"], container_env(container)
        assert "REDIS_URL" not in env, f"{container.id}: the Sentinels name the primary"
        for host, port in addresses(env["REDIS_SENTINELS"]):
            pod, service = host.split(".")
            assert named("Service", service, HA)["spec"]["clusterIP"] == "None", f"{host}: a pod's own name"
            assert port == nodes[pod]["sentinel"], host
            flows[Flow(client, pod, port)] = "REDIS_SENTINELS"
        for pod, ports in nodes.items():
            flows[Flow(client, pod, ports["redis"])] = "the primary the Sentinels name"
        flows |= dns(client, "resolves the Sentinels' and the primary's names")
    for client in nodes:
        for server, ports in nodes.items():
            if client != server:
                flows[Flow(client, server, ports["redis"])] = "replication; a Sentinel watching a node"
                flows[Flow(client, server, ports["sentinel"])] = "Sentinel gossip; a starting node asking"
        flows |= dns(client, "resolves the nodes' names (sentinel resolve-hostnames)")
    return flows


def test_ha_every_needed_flow_is_allowed_by_exactly_one_pair():
    wrong = pair_errors(ha_cluster(), ha_needed())
    assert not wrong, "\n".join(wrong)


def test_ha_nothing_else_is_allowed():
    extra, missing = unexpected(ha_cluster(), ha_needed())
    assert not extra, "allowed, and no flow needs it:\n" + "\n".join(extra)
    assert not missing, "needed, and not allowed:\n" + "\n".join(missing)


@pytest.mark.parametrize("port", ["redis", "sentinel"])
def test_ha_who_may_reach_a_redis_node(port):
    world = ha_cluster()
    number = redis_nodes(world)["redis-0"][port]
    found = {c for c in world.endpoints if c != "redis-0" and world.allows(Flow(c, "redis-0", number))}
    assert found == {"control-plane", "machine-1", "machine-2", "alerter", "redis-1", "redis-2"}
    assert not world.allows(Flow(f"{ELSEWHERE}/redis-1", "redis-0", number)), "a look-alike elsewhere"


# prometheus-operator: its Prometheus, in another namespace, scrapes what podmonitor.yaml selects


@functools.cache
def operator_cluster() -> Cluster:
    """infra/k8s and operator/ applied (no infra/monitoring), with the operator's Prometheus in `monitoring`."""
    pods = workload_pods((MANIFESTS,))
    labels = {"app.kubernetes.io/name": "prometheus"}
    operator = [
        Endpoint(f"{namespace}/prometheus", f"10.246.0.{i}", namespace, labels)
        for i, namespace in ((1, "monitoring"), (2, ELSEWHERE))
    ]
    every = policies(*sorted(MANIFESTS.glob("*.yaml")), OPERATOR / "networkpolicy.yaml")
    return Cluster({**namespaces(), "monitoring": {}}, pods + strangers(pods) + operator, every)


def test_the_operator_policy_validates_strictly_against_kubernetes_1_31():
    import kubernetes_validate

    (policy,) = policies(OPERATOR / "networkpolicy.yaml")
    kubernetes_validate.validate(policy, "1.31.0", strict=True)


def test_the_operator_s_prometheus_reaches_what_the_podmonitor_scrapes_and_nothing_else():
    import yaml

    (monitor,) = yaml.safe_load_all((OPERATOR / "podmonitor.yaml").read_text())
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    world = operator_cluster()
    wanted = set()
    for pod in world.endpoints.values():
        if ours(pod) and label_selector_matches(monitor["spec"]["selector"], pod.labels):
            (port,) = [p for p in pod.ports if p.name == endpoint["port"]]
            wanted.add(Flow("monitoring/prometheus", pod.name, port.number))
    assert wanted and {f for f in wanted if not world.allows(f)} == set()
    found = {f for f in allowed(world) if f.client == "monitoring/prometheus"}
    # The workers' `http` is open to everyone already: the policy adds the other pods' ports, and nothing else.
    private = {f for f in found if (f.server, f.port) not in public_doors()}
    assert private == {f for f in wanted if (f.server, f.port) not in public_doors()}
    assert not world.allows(Flow(f"{ELSEWHERE}/prometheus", "control-plane", 8000)), "a look-alike elsewhere"
