"""Prometheus and Alertmanager beside a local pipeline, configured from the files infra/monitoring ships.

The shipped files are read, never changed: the local configuration is derived from them in a temporary folder.
Prometheus gets the same rules, intervals and job, with static targets labelled as prometheus.yml's Kubernetes
relabelling labels the pods; Alertmanager gets the same routes, with the alerter's webhook pointed at the local
alerter and its token in a file beside the config. Tests shorten the intervals (`intervals=`) and the rules'
`for:` (`hold=`, applied to copies of the rule files), and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from numcast.local import Alertmanager, _die_with_parent, alertmanager_binary, free_port, stop, wait_http

# Relative to the repository's root, where `numcast up` (and `tox -e up`) runs.
CONFIG_DIR = Path("infra/monitoring/config")
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
ALERTER_HOST = "alerter"  # the Service alertmanager.yml's webhook names
ALERTER_TOKEN_FILE = "alerter-token"  # beside the local alertmanager.yml, which names it by this relative path


@dataclasses.dataclass(frozen=True)
class Target:
    """One local process Prometheus scrapes: `component` as in the pods' app.kubernetes.io/component."""

    component: str
    name: str
    port: int  # the public port: the control-plane's pushed series (/api/push/metrics) are there
    admin_port: int = 0  # where /metrics is (ADMIN_PORT); 0: the public port

    def labels(self) -> dict[str, str]:
        """The labels prometheus.yml's relabelling gives the pod of this process (less namespace)."""
        labels = {"component": self.component, "pod": self.name}
        if self.component == "worker":
            labels["worker"] = self.name
        return labels


def binaries() -> dict[str, str]:
    """{"prometheus": path, "alertmanager": path} of the binaries on PATH; a missing one is left out."""
    found = {"prometheus": shutil.which("prometheus"), "alertmanager": alertmanager_binary()}
    return {role: path for role, path in found.items() if path}


def missing(config_dir: Path = CONFIG_DIR) -> str | None:
    """What keeps monitoring from starting, said so that the user can fix it; None when nothing does."""
    names = {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager (or alertmanager)"}
    absent = [name for role, name in names.items() if role not in binaries()]
    if absent:
        return f"{' and '.join(absent)} not found on PATH: {INSTALL_HINT}"
    for name in ("prometheus.yml", "alertmanager.yml"):
        if not (config_dir / name).is_file():
            return f"no {config_dir / name}: run from the repository's root, or pass --monitoring-config DIR"
    return None


PUSHED_JOB = "numcast-pushed"  # prometheus.yml's job for /api/push/metrics, with honor_labels


def prometheus_config(
    shipped: dict, config_dir: Path, targets: list[Target], alertmanager: str, intervals: str | None = None
) -> dict:
    """The shipped prometheus.yml with static targets, the local Alertmanager and absolute rule paths.

    The runbooks are the docs beside the configuration, when they are there: the alerts link to the local files.
    """
    config = copy.deepcopy(shipped)
    config["rule_files"] = [str((config_dir / name).resolve()) for name in shipped.get("rule_files", [])]
    config.setdefault("alerting", {})["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    docs = config_dir.resolve().parents[2] / "docs" if len(config_dir.resolve().parents) > 2 else None
    if docs is not None and (docs / "monitoring.md").is_file() and "global" in config:
        config["global"].setdefault("external_labels", {})["runbook_base_url"] = docs.as_uri()
    # Discovery and the relabelling of what it finds give way to targets that already carry the labels: every
    # process for the job `numcast`, the control-plane's pushed series for `numcast-pushed` (docs/push.md).
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job.pop("relabel_configs", None)
        if job["job_name"] == PUSHED_JOB:  # as its relabelling in the cluster: the control-plane, no labels added
            job["static_configs"] = [
                {"targets": [f"127.0.0.1:{t.port}"]} for t in targets if t.component == "control-plane"
            ]
        else:
            job["static_configs"] = [
                {"targets": [f"127.0.0.1:{t.admin_port or t.port}"], "labels": t.labels()} for t in targets
            ]
    if intervals:
        config["global"].update(scrape_interval=intervals, scrape_timeout=intervals, evaluation_interval=intervals)
    return config


def held_rules(shipped: dict, hold: str) -> dict:
    """A rule file's content with every alert's `for:` replaced by `hold` (where it has one)."""
    rules = copy.deepcopy(shipped)
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule and "for" in rule:
                rule["for"] = hold
    return rules


def alertmanager_config(
    shipped: dict, alerter: str | None, intervals: str | None = None, credentials_file: str | None = None
) -> dict:
    """The shipped alertmanager.yml with the webhooks that name the alerter's Service sent to `alerter`.

    Their bearer token comes from `credentials_file`; without one (an alerter with no token) they send none.
    """
    config = copy.deepcopy(shipped)
    local = urllib.parse.urlsplit(alerter or "")
    for receiver in config.get("receivers", []) if alerter else []:
        for webhook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(webhook["url"])
            if url.hostname == ALERTER_HOST:
                webhook["url"] = urllib.parse.urlunsplit(url._replace(scheme=local.scheme, netloc=local.netloc))
                http_config = webhook.setdefault("http_config", {})
                http_config.pop("authorization", None)
                if credentials_file:
                    http_config["authorization"] = {"type": "Bearer", "credentials_file": credentials_file}
                if not http_config:
                    webhook.pop("http_config")
    if intervals:
        config["route"].update(group_wait=intervals, group_interval=intervals)
    return config


def for_stack(stack, config_dir: Path = CONFIG_DIR, **options) -> Monitoring:
    """Monitoring for a `numcast.stack.Stack` (its ports are known before it starts), the webhook on its alerter."""
    admin = stack.admin_ports
    targets = [Target("control-plane", "control-plane", stack.control_port, admin["control-plane"])]
    targets += [Target("worker", name, port, admin[name]) for name, port, _ in stack.workers]
    if stack.alerter:
        targets.append(Target("alerter", "alerter", stack.alerter_port, admin["alerter"]))
    alerter = stack.alerter_url if stack.alerter else None
    token = stack.alerter_token if stack.alerter else ""
    return Monitoring(targets, alerter, config_dir, alerter_token=token, **options)


class Monitoring:
    """Alertmanager (`numcast.local.Alertmanager`) and Prometheus on free ports of 127.0.0.1, state in temp folders."""

    def __init__(
        self,
        targets: list[Target],
        alerter: str | None,
        config_dir: Path = CONFIG_DIR,
        *,
        intervals: str | None = None,
        hold: str | None = None,
        alerter_token: str = "",
    ) -> None:
        """`alerter` is the local alerter's base URL, `alerter_token` the token its webhook needs (if any);
        `intervals` replaces every scrape/evaluation/group interval, `hold` every alert's `for:`."""
        self.targets, self.alerter, self.config_dir, self.intervals = targets, alerter, Path(config_dir), intervals
        self.hold = hold
        self.alerter_token = alerter_token
        self.prometheus_port, self.alertmanager_port = free_port(), free_port()
        self.dir: Path | None = None
        self.alertmanager: Alertmanager | None = None
        self.prometheus: subprocess.Popen | None = None

    @property
    def prometheus_url(self) -> str:
        """Prometheus' UI and API."""
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        """Alertmanager's UI and API."""
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def configs(self, rules_dir: Path | None = None) -> tuple[str, str]:
        """The derived prometheus.yml and alertmanager.yml, as text; with `hold`, the held rules go to `rules_dir`."""
        import yaml

        shipped = yaml.safe_load((self.config_dir / "prometheus.yml").read_text())
        address = f"127.0.0.1:{self.alertmanager_port}"
        prometheus = prometheus_config(shipped, self.config_dir, self.targets, address, self.intervals)
        if self.hold and rules_dir is not None:
            held = []
            for path in map(Path, prometheus["rule_files"]):
                copy_path = rules_dir / path.name
                copy_path.write_text(yaml.safe_dump(held_rules(yaml.safe_load(path.read_text()), self.hold)))
                held.append(str(copy_path))
            prometheus["rule_files"] = held
        shipped = yaml.safe_load((self.config_dir / "alertmanager.yml").read_text())
        credentials = ALERTER_TOKEN_FILE if self.alerter_token else None
        alertmanager = alertmanager_config(shipped, self.alerter, self.intervals, credentials)
        return yaml.safe_dump(prometheus, sort_keys=False), yaml.safe_dump(alertmanager, sort_keys=False)

    def start(self, timeout: float = 60.0) -> Monitoring:
        """Start Alertmanager, then Prometheus, and wait until both are ready; on failure stop what started."""
        problem = missing(self.config_dir)
        if problem:
            raise RuntimeError(problem)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix="numcast-prometheus-"))
            prometheus_yml, alertmanager_yml = self.configs(self.dir)
            files = {ALERTER_TOKEN_FILE: self.alerter_token} if self.alerter_token else None
            self.alertmanager = Alertmanager(alertmanager_yml, self.alertmanager_port, files).start(timeout)
            (self.dir / "prometheus.yml").write_text(prometheus_yml)
            command = [
                binaries()["prometheus"], f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--log.level=warn",
            ]  # fmt: skip
            self.prometheus = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
            wait_http(f"{self.prometheus_url}/-/ready", timeout, self.prometheus)
        except BaseException:
            self.stop()
            raise
        return self

    def exited(self) -> tuple[str, int] | None:
        """(name, exit code) of a server that has ended, if any."""
        alertmanager = self.alertmanager.process if self.alertmanager else None
        for name, process in (("prometheus", self.prometheus), ("alertmanager", alertmanager)):
            if process is not None and process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self, report=lambda line: None) -> None:
        """Stop Prometheus first (it sends to Alertmanager), then Alertmanager; remove the temporary folders."""
        if self.prometheus is not None:
            report(f"stopped prometheus (exit code {stop(self.prometheus)})")
            self.prometheus = None
        if self.alertmanager is not None:
            self.alertmanager.stop()
            process = self.alertmanager.process
            report(f"stopped alertmanager (exit code {process.returncode if process else None})")
            self.alertmanager = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def banner_lines(self) -> list[tuple[str, str]]:
        """(what, where) for `numcast up`'s banner."""
        return [
            ("prometheus", f"{self.prometheus_url}/alerts"),
            ("alertmanager", f"{self.alertmanager_url}/"),
        ]
