"""Prometheus and Alertmanager beside a local pipeline, configured from the files infra/monitoring ships.

The shipped files are read, never changed: the local configuration is derived from them in a temporary folder.
Prometheus gets the same rules, intervals and job, with static targets labelled as prometheus.yml's Kubernetes
relabelling labels the pods; Alertmanager gets the same routes, with the alerter's webhook pointed at the local
alerter. Tests shorten the intervals (`intervals=`) and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from numcast.local import _die_with_parent, free_port, stop, wait_http

# Relative to the repository's root, where `numcast up` (and `tox -e up`) runs.
CONFIG_DIR = Path("infra/monitoring/config")
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
# Debian calls the Alertmanager binary prometheus-alertmanager; upstream's tarball calls it alertmanager.
BINARIES = {"prometheus": ("prometheus",), "alertmanager": ("prometheus-alertmanager", "alertmanager")}
ALERTER_HOST = "alerter"  # the Service alertmanager.yml's webhook names
# The component label of a Stack's process by its name; every other one is a worker (machine-1, ...).
COMPONENTS = {"control-plane": "control-plane", "alerter": "alerter"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One local process Prometheus scrapes: `component` as in the pods' app.kubernetes.io/component."""

    component: str
    name: str
    port: int

    def labels(self) -> dict[str, str]:
        """The labels prometheus.yml's relabelling gives the pod of this process (less namespace)."""
        labels = {"component": self.component, "pod": self.name}
        if self.component == "worker":
            labels["worker"] = self.name
        return labels


def binaries() -> dict[str, str]:
    """{"prometheus": path, "alertmanager": path} of the binaries on PATH; a missing one is left out."""
    found = {}
    for role, names in BINARIES.items():
        path = next((p for p in map(shutil.which, names) if p), None)
        if path:
            found[role] = path
    return found


def missing(config_dir: Path = CONFIG_DIR) -> str | None:
    """What keeps monitoring from starting, said so that the user can fix it; None when nothing does."""
    absent = [" or ".join(names) for role, names in BINARIES.items() if role not in binaries()]
    if absent:
        return f"{' and '.join(absent)} not found on PATH: {INSTALL_HINT}"
    for name in ("prometheus.yml", "alertmanager.yml"):
        if not (config_dir / name).is_file():
            return f"no {config_dir / name}: run from the repository's root, or pass --monitoring-config DIR"
    return None


def prometheus_config(
    shipped: dict, config_dir: Path, targets: list[Target], alertmanager: str, intervals: str | None = None
) -> dict:
    """The shipped prometheus.yml with static targets, the local Alertmanager and absolute rule paths."""
    config = copy.deepcopy(shipped)
    config["rule_files"] = [str((config_dir / name).resolve()) for name in shipped.get("rule_files", [])]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (job,) = config["scrape_configs"]
    # Discovery and the relabelling of what it finds give way to targets that already carry the labels.
    job.pop("kubernetes_sd_configs")
    job.pop("relabel_configs", None)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{t.port}"], "labels": t.labels()} for t in targets]
    if intervals:
        config["global"].update(scrape_interval=intervals, scrape_timeout=intervals, evaluation_interval=intervals)
    return config


def alertmanager_config(shipped: dict, alerter: str | None, intervals: str | None = None) -> dict:
    """The shipped alertmanager.yml with the webhooks that name the alerter's Service sent to `alerter`."""
    config = copy.deepcopy(shipped)
    local = urllib.parse.urlsplit(alerter or "")
    for receiver in config.get("receivers", []) if alerter else []:
        for webhook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(webhook["url"])
            if url.hostname == ALERTER_HOST:
                webhook["url"] = urllib.parse.urlunsplit(url._replace(scheme=local.scheme, netloc=local.netloc))
    if intervals:
        config["route"].update(group_wait=intervals, group_interval=intervals)
    return config


def for_stack(processes: list[tuple[str, object, int]], config_dir: Path = CONFIG_DIR, **options) -> Monitoring:
    """Monitoring for the (name, process, HTTP port) of a `numcast.stack.Stack`, its webhook on the alerter."""
    targets = [Target(COMPONENTS.get(name, "worker"), name, port) for name, _, port in processes]
    alerter = next((f"http://127.0.0.1:{port}" for name, _, port in processes if name == "alerter"), None)
    return Monitoring(targets, alerter, config_dir, **options)


class Monitoring:
    """Alertmanager and Prometheus on free ports of 127.0.0.1, their state in a temporary folder."""

    def __init__(
        self,
        targets: list[Target],
        alerter: str | None,
        config_dir: Path = CONFIG_DIR,
        *,
        intervals: str | None = None,
    ) -> None:
        """`alerter` is the local alerter's base URL; `intervals` replaces every scrape/evaluation/group interval."""
        self.targets, self.alerter, self.config_dir, self.intervals = targets, alerter, Path(config_dir), intervals
        self.prometheus_port, self.alertmanager_port = free_port(), free_port()
        self.dir: Path | None = None
        self.processes: list[tuple[str, subprocess.Popen]] = []

    @property
    def prometheus_url(self) -> str:
        """Prometheus' UI and API."""
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        """Alertmanager's UI and API."""
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def write_configs(self) -> tuple[Path, Path]:
        """Write the derived prometheus.yml and alertmanager.yml into the temporary folder; return their paths."""
        import yaml  # only here: the services themselves never read YAML

        self.dir = Path(tempfile.mkdtemp(prefix="numcast-monitoring-"))
        shipped = yaml.safe_load((self.config_dir / "prometheus.yml").read_text())
        address = f"127.0.0.1:{self.alertmanager_port}"
        prometheus = prometheus_config(shipped, self.config_dir, self.targets, address, self.intervals)
        shipped = yaml.safe_load((self.config_dir / "alertmanager.yml").read_text())
        alertmanager = alertmanager_config(shipped, self.alerter, self.intervals)
        paths = self.dir / "prometheus.yml", self.dir / "alertmanager.yml"
        for path, config in zip(paths, (prometheus, alertmanager), strict=True):
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        return paths

    def start(self, timeout: float = 60.0) -> Monitoring:
        """Start Alertmanager, then Prometheus, and wait until both are ready; on failure stop what started."""
        problem = missing(self.config_dir)
        if problem:
            raise RuntimeError(problem)
        found = binaries()
        try:
            prometheus_yml, alertmanager_yml = self.write_configs()
            self._run(
                "alertmanager",
                [
                    found["alertmanager"], f"--config.file={alertmanager_yml}",
                    f"--storage.path={self.dir / 'alertmanager'}",
                    f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                    "--cluster.listen-address=",  # one instance: no gossip port to clash with another
                    "--log.level=warn",
                ],
                self.alertmanager_url,
                timeout,
            )  # fmt: skip
            self._run(
                "prometheus",
                [
                    found["prometheus"], f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={self.dir / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                    "--log.level=warn",
                ],
                self.prometheus_url,
                timeout,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, name: str, command: list[str], url: str, timeout: float) -> None:
        process = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
        self.processes.append((name, process))
        wait_http(f"{url}/-/ready", timeout, process)

    def exited(self) -> tuple[str, int] | None:
        """(name, exit code) of a server that has ended, if any."""
        for name, process in self.processes:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self, report=lambda line: None) -> None:
        """Stop Prometheus first (it sends to Alertmanager), then Alertmanager; remove the temporary folder."""
        for name, process in reversed(self.processes):
            report(f"stopped {name} (exit code {stop(process)})")
        self.processes = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def banner_lines(self) -> list[tuple[str, str]]:
        """(what, where) for `numcast up`'s banner."""
        return [
            ("prometheus", f"{self.prometheus_url}/alerts"),
            ("alertmanager", f"{self.alertmanager_url}/"),
        ]
