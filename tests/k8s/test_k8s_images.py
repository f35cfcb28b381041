"""The Dockerfiles read as a contract: the command they run, the user, the ports, the layers and the context."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from k8s_support import (
    ROOT,
    build_commands,
    collected,
    container_command,
    dockerfile,
    numcast_containers,
    settings_class,
)

pytestmark = pytest.mark.k8s

DOCKERFILES = {"services/control/Dockerfile": "control", "services/worker/Dockerfile": "worker"}


def declared_ports(settings_cls: type) -> set[int]:
    """The default of every *port setting: what the service listens on unless told otherwise."""
    return {f.default for f in dataclasses.fields(settings_cls) if f.name.endswith("port")}


@pytest.mark.parametrize(("path", "command"), DOCKERFILES.items())
def test_the_image_runs_a_numcast_subcommand_that_exists(path, command):
    from numcast import cli

    image = dockerfile(path)
    assert image.exec_form("ENTRYPOINT") == ["numcast"]
    assert image.exec_form("CMD") == [command]
    subcommands = re.search(r"\{([a-z,]+)\}", cli.USAGE).group(1).split(",")
    assert command in subcommands
    # The console script the ENTRYPOINT names is the one the distribution installs.
    assert 'numcast = "numcast.cli:main"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize(("path", "command"), DOCKERFILES.items())
def test_the_image_runs_as_a_numeric_non_root_user_matching_the_manifests(path, command):
    image = dockerfile(path)
    (user,) = image.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so the kubelet can check runAsNonRoot"
    assert gid.isdigit() and int(gid) != 0
    image_name = build_commands()[path]
    for container in numcast_containers():
        if container.spec["image"] == image_name:
            assert container.security("runAsUser") == int(uid)
            assert container.security("runAsGroup") == int(gid)


@pytest.mark.parametrize(("path", "command"), DOCKERFILES.items())
def test_exposed_ports_are_the_settings_defaults_and_the_manifests_ports(path, command):
    image = dockerfile(path)
    exposed = {int(port.split("/")[0]) for args in image.all("EXPOSE") for port in args.split()}
    assert exposed == declared_ports(settings_class(command))
    image_name = build_commands()[path]
    for container in numcast_containers():
        if container.spec["image"] == image_name and container_command(container) == command:
            assert {p["containerPort"] for p in container.spec["ports"]} == exposed


@pytest.mark.parametrize(("path", "command"), DOCKERFILES.items())
def test_the_base_is_pinned_and_the_final_stage_builds_nothing(path, command):
    image = dockerfile(path)
    args = dict(arg.split("=", 1) for arg in image.all("ARG", image.stages[0]))
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    froms = [stage[0][1] for stage in image.stages[1:]]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"], "a build stage, then the same base, clean"
    final_runs = " ".join(image.all("RUN"))
    for tool in ("pip", "apt-get", "gcc", "make"):
        assert not re.search(rf"\b{tool}\b", final_runs), f"{tool} in the final stage"
    assert image.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    assert image.all("STOPSIGNAL") == ["SIGTERM"]


@pytest.mark.parametrize(("path", "command"), DOCKERFILES.items())
def test_dependencies_are_installed_before_the_code_is_copied(path, command):
    build = dockerfile(path).stages[1]
    steps = [(name, args) for name, args in build if name in ("COPY", "RUN")]
    copies = [i for i, (name, _) in enumerate(steps) if name == "COPY"]
    deps = next(i for i, (name, args) in enumerate(steps) if name == "RUN" and "--requirement" in args)
    assert steps[copies[0]][1].split()[0] == "pyproject.toml"
    assert copies[0] < deps < copies[1], "a code change must not re-run the dependency install"
    assert "--no-cache-dir" in steps[deps][1] and "--no-deps ." in steps[-1][1]


@pytest.mark.parametrize(("path", "command"), DOCKERFILES.items())
def test_the_image_writes_only_to_tmp_and_its_data_dir(path, command):
    image = dockerfile(path)
    (workdir,) = image.all("WORKDIR")
    env = image.env()
    assert workdir == "/data" and env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc writes into a read-only root"
    if command == "worker":
        assert Path(env["SINK_FILE"]).parent == Path(workdir)


@pytest.mark.parametrize("container", collected(numcast_containers), ids=lambda c: c.id)
def test_the_manifests_mount_emptydirs_where_the_image_writes(container):
    mounts = {m["mountPath"] for m in container.spec.get("volumeMounts", [])}
    assert "/tmp" in mounts
    if container_command(container) == "worker":
        sink = next(v["value"] for v in container.spec["env"] if v["name"] == "SINK_FILE")
        assert str(Path(sink).parent) in mounts


def excluded(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        regex = re.escape(body.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_dockerignore_keeps_the_context_to_what_the_images_copy():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kept in ("pyproject.toml", "libs/numcast/cli.py", "services/worker/numcast_worker/static/dashboard.js"):
        assert not excluded(patterns, kept), kept
    for dropped in (
        ".git/HEAD",
        ".tox/py/bin/python",
        "node_modules/uplot/package.json",
        "tests/conftest.py",
        "bench/run.py",
        "infra/k8s/00-namespace.yaml",
        "services/worker/numcast_worker/__pycache__/sink.cpython-311.pyc",
        "numcast.egg-info/PKG-INFO",
        "numcast-data/machine-1.jsonl",
    ):
        assert excluded(patterns, dropped), dropped
    for path in DOCKERFILES:
        for name, args in dockerfile(path).stages[1]:
            if name == "COPY" and not args.startswith("--from"):
                assert not excluded(patterns, args.split()[0]), f"{path} copies {args.split()[0]}, which is ignored"
