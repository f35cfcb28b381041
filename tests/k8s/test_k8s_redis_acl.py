"""The Redis users in the manifests, offline: the ACL Secret is what numcast.redis_acl renders, the default user is
off, every Deployment gets only its own role's password, and a real Redis 7 loads the file."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys

import pytest
import redis
from k8s_support import (
    HA,
    MANIFESTS,
    ROOT,
    collected,
    container_command,
    container_env,
    containers,
    documents,
    mounted_file,
    named,
    numcast_containers,
)
from needs import missing
from test_k8s_tokens import mounted_secret

from numcast import redis_acl, redis_limits
from numcast.local import Redis

pytestmark = pytest.mark.k8s

SYSTEM_REDIS = "/usr/bin/redis-server"  # 7.x, as the cluster's image
SECURITY_DOC = ROOT / "docs" / "security.md"


def script():
    """scripts/redis_acl.py as a module."""
    spec = importlib.util.spec_from_file_location("redis_acl_script", ROOT / "scripts" / "redis_acl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def acl_text() -> str:
    return named("Secret", "redis-acl")["stringData"]["users.acl"]


def role_passwords() -> dict[str, str]:
    return {role.name: named("Secret", f"redis-{role.name}")["stringData"]["password"] for role in redis_acl.ROLES}


def redis_container():
    (found,) = [c for c in containers() if c.workload["metadata"]["name"] == "redis"]
    return found


def test_05_secret_yaml_is_what_the_script_renders_from_the_roles():
    assert (MANIFESTS / "05-secret.yaml").read_text() == script().manifest(), "run python scripts/redis_acl.py"


def test_the_acl_secret_holds_the_roles_for_the_configmap_s_channels_and_the_secrets_passwords():
    common = named("ConfigMap", "numcast-common")["data"]
    expected = redis_acl.render(role_passwords(), common["CHANNEL"], common["ALERTS_CHANNEL"], version=7)
    assert acl_text() == expected
    for password in role_passwords().values():
        assert password not in acl_text(), "the ACL file holds hashes only"
        assert hashlib.sha256(password.encode()).hexdigest() in acl_text()


def test_the_default_user_is_off_and_redis_loads_the_acl_secret():
    lines = acl_text().splitlines()
    assert lines[0].split()[:3] == ["user", "default", "off"]
    assert [line for line in lines if line.split()[1] == "default"] == [lines[0]]
    redis = redis_container()
    args = redis.spec["args"]
    assert "--requirepass" not in args and "--aclfile" in args
    acl_path = args[args.index("--aclfile") + 1]
    assert mounted_secret(redis, acl_path) == ("redis-acl", "users.acl")
    assert mounted_file(redis, acl_path) == acl_text()


def test_redis_s_probes_ping_as_the_probe_user():
    redis = redis_container()
    for probe in ("readinessProbe", "livenessProbe"):  # a hung Redis still accepts TCP: liveness PINGs too
        assert "redis-cli --user probe ping | grep -q PONG" in " ".join(redis.spec[probe]["exec"]["command"])
    env = {var["name"]: var for var in redis.spec["env"]}
    assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == {"name": "redis-probe", "key": "password"}
    assert redis_acl.BY_NAME["probe"].commands == ("ping",), "the probe may only PING"


def test_redis_runs_with_the_memory_bounds_of_numcast_redis_limits():
    args = redis_container().spec["args"]
    bounds = redis_limits.arguments(7)
    start = args.index(bounds[0])
    assert args[start : start + len(bounds)] == bounds, "numcast.redis_limits and 10-redis.yaml disagree"


def secrets_referenced(container) -> set[str]:
    """Every Secret a container's pod can read: mounted volumes and env references."""
    found = {v["secret"]["secretName"] for v in container.pod.get("volumes", []) if "secret" in v}
    for c in container.pod.get("containers", []) + container.pod.get("initContainers", []):
        for var in c.get("env", []):
            if "secretKeyRef" in var.get("valueFrom", {}):
                found.add(var["valueFrom"]["secretKeyRef"]["name"])
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                found.add(source["secretRef"]["name"])
    return found


@pytest.mark.parametrize(
    "container", collected(lambda: numcast_containers() + numcast_containers(HA)), ids=lambda c: c.id
)
def test_every_deployment_gets_only_its_own_role_s_password(container):
    role = redis_acl.SERVICE_ROLES[container_command(container)]
    env = container_env(container)
    assert env["REDIS_USERNAME"] == role
    assert "REDIS_PASSWORD" not in env, "the password comes as a file"
    assert mounted_secret(container, env["REDIS_PASSWORD_FILE"]) == (f"redis-{role}", "password")
    redis_secrets = {name for name in secrets_referenced(container) if name.startswith("redis-")}
    assert redis_secrets == {f"redis-{role}"}, f"{container.id} can read {sorted(redis_secrets)}"


def test_redis_itself_reads_only_the_acl_and_the_probe_s_password():
    assert secrets_referenced(redis_container()) == {"redis-acl", "redis-probe"}


def test_every_role_has_a_secret_and_every_service_a_role():
    names = {doc["metadata"]["name"] for file, doc in documents() if file == "05-secret.yaml"}
    assert names == {"redis-acl"} | {f"redis-{role.name}" for role in redis_acl.ROLES}
    assert set(redis_acl.SERVICE_ROLES) == {container_command(c) for c in numcast_containers()}


def test_the_development_passwords_are_marked_and_the_rotation_is_documented():
    assert "# DEVELOPMENT PASSWORDS ONLY." in (MANIFESTS / "05-secret.yaml").read_text()
    for role, password in role_passwords().items():
        assert password.startswith("numcast-dev-") and password.endswith("-change-me"), role
    doc = SECURITY_DOC.read_text()
    loop = f"for role in {' '.join(role.name for role in redis_acl.ROLES)}; do"
    assert loop in doc, "docs/security.md: the rotation loop names every role"
    assert 'kubectl -n numcast create secret generic "redis-$role"' in doc
    assert "python scripts/redis_acl.py --password-dir" in doc


def test_the_script_renders_the_acl_secret_for_rotated_passwords(tmp_path):
    for role in redis_acl.ROLES:
        (tmp_path / role.name).write_text(f"rotated-{role.name}\n")  # `openssl rand -hex 24 >` adds the newline
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "redis_acl.py"), "--password-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    import yaml

    secret = yaml.safe_load(result.stdout)
    assert secret["metadata"] == named("Secret", "redis-acl")["metadata"]
    rotated = {role.name: f"rotated-{role.name}" for role in redis_acl.ROLES}
    assert secret["stringData"]["users.acl"] == redis_acl.render(rotated, version=7)


def test_a_real_redis_7_loads_the_secret_s_acl_file_and_each_role_s_password_works(tmp_path):
    if not os.access(SYSTEM_REDIS, os.X_OK):
        missing("no Redis 7: apt-get install -y redis-server")
    server = Redis(binary=SYSTEM_REDIS, acl=True)
    server.passwords = role_passwords()  # the manifests' own: the server renders the same file from them
    server.start()
    try:
        with open(os.path.join(server.dir, "users.acl")) as file:
            assert file.read() == acl_text()
        for role, password in role_passwords().items():
            assert redis.Redis(port=server.port, username=role, password=password).ping(), role
        probe = subprocess.run(
            ["redis-cli", "-p", str(server.port), "--user", "probe", "ping"],
            env={**os.environ, "REDISCLI_AUTH": role_passwords()["probe"]},
            capture_output=True,
            text=True,
        )
        assert probe.stdout.strip() == "PONG", "the readiness probe's command"
    finally:
        server.stop()


def test_the_liveness_probe_fails_on_a_redis_that_accepts_connections_but_does_not_answer():
    """A Redis hung (here stopped; a Lua loop answered BUSY before scripting was taken away) still accepts TCP
    connections, which is all the old tcpSocket probe checked; the PING as `probe` fails within its timeout."""
    if not os.access(SYSTEM_REDIS, os.X_OK):
        missing("no Redis 7: apt-get install -y redis-server")
    probe = redis_container().spec["livenessProbe"]
    server = Redis(binary=SYSTEM_REDIS, acl=True)
    server.passwords = role_passwords()
    server.start()
    shell, flag, script = probe["exec"]["command"]  # the manifest's own, pointed at this server's port
    command = [shell, flag, script.replace("redis-cli ", f"redis-cli -p {server.port} ", 1)]
    env = {**os.environ, "REDISCLI_AUTH": role_passwords()["probe"]}
    try:
        assert subprocess.run(command, env=env, timeout=5).returncode == 0, "a live Redis passes"
        server.process.send_signal(signal.SIGSTOP)
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()  # TCP still accepted
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(command, env=env, timeout=probe["timeoutSeconds"] / 2)
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()
