"""Write infra/monitoring's ConfigMaps and PrometheusRule from the files in infra/monitoring/config.

The configuration exists once, as the files Prometheus and Alertmanager read; what Kubernetes needs is generated
from them (`--check`: only say whether the generated files are out of date). Each Deployment's pod template
carries a checksum of its configuration, so that `kubectl apply -f infra/monitoring` restarts the pod when the
configuration changed.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "infra" / "monitoring"
PYPROJECT = ROOT / "pyproject.toml"
CONFIG = MONITORING / "config"
VERSION_LINE = re.compile(r'^    app\.kubernetes\.io/version: "([^"]+)"$', re.MULTILINE)
CHECKSUM_LINE = re.compile(r"^(        checksum/config: ).*$", re.MULTILINE)
# name: (its Deployment's file, its ConfigMap's file, the config files the ConfigMap holds)
COMPONENTS = {
    "prometheus": ("10-prometheus.yaml", "11-prometheus-config.yaml", ["prometheus.yml", "numcast-alerts.yaml"]),
    "alertmanager": ("20-alertmanager.yaml", "21-alertmanager-config.yaml", ["alertmanager.yml"]),
}


def header(sources: list[str]) -> str:
    """The comment that opens every generated file."""
    names = " and ".join(f"config/{name}" for name in sources)
    return (
        f"# GENERATED from {names} by scripts/monitoring_manifests.py: edit the source, then run\n"
        "# `python scripts/monitoring_manifests.py`; a test fails while this file is out of date.\n"
    )


def version_of(manifest: Path) -> str:
    """The app.kubernetes.io/version a manifest's objects carry."""
    return VERSION_LINE.search(manifest.read_text()).group(1)


def metadata(name: str, version: str) -> str:
    """The metadata block, with the labels every numcast object carries."""
    return (
        f"metadata:\n  name: {name}\n  namespace: numcast\n  labels:\n"
        f"    app.kubernetes.io/name: {name}\n    app.kubernetes.io/instance: {name}\n"
        f"    app.kubernetes.io/component: monitoring\n    app.kubernetes.io/part-of: numcast\n"
        f'    app.kubernetes.io/version: "{version}"\n'
    )


def block(text: str, indent: int) -> str:
    """`text` indented by `indent` spaces, blank lines left empty (the body of a YAML block scalar)."""
    if not text.endswith("\n") or text.endswith("\n\n") or text[0] in " \t":
        raise SystemExit("a config file must start unindented and end with exactly one newline")
    pad = " " * indent
    return "".join(pad + line if line.strip() else "\n" for line in text.splitlines(keepends=True))


def config_map(name: str) -> str:
    """The ConfigMap `name`: the config files of the Deployment `name`, byte for byte."""
    deployment, _, files = COMPONENTS[name]
    data = "".join(f"  {file}: |\n{block((CONFIG / file).read_text(), 4)}" for file in files)
    version = version_of(MONITORING / deployment)
    return f"{header(files)}apiVersion: v1\nkind: ConfigMap\n{metadata(name, version)}data:\n{data}"


def prometheus_rule() -> str:
    """The PrometheusRule: the rules file's groups as its spec (the same schema), its opening comment left out."""
    rules = (CONFIG / "numcast-alerts.yaml").read_text()
    body = rules[rules.index("\ngroups:") + 1 :]
    return (
        f"{header(['numcast-alerts.yaml'])}"
        "# For prometheus-operator: the Prometheus resource picks rules by label (its ruleSelector); add the label\n"
        "# it expects (kube-prometheus-stack: `release: <release name>`) if it is not this one.\n"
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n"
        f"{metadata('numcast-alerts', tomllib.loads(PYPROJECT.read_text())['project']['version'])}"
        f"spec:\n{block(body, 2)}"
    )


def with_checksum(manifest: str, config: str) -> str:
    """`manifest` with its pod template's checksum/config annotation set to the SHA-256 of `config`."""
    digest = hashlib.sha256(config.encode()).hexdigest()
    text, found = CHECKSUM_LINE.subn(rf"\g<1>{digest}", manifest)
    if found != 1:
        raise SystemExit("a Deployment needs one `checksum/config:` annotation in its pod template")
    return text


def render() -> dict[Path, str]:
    """{path: wanted content} of every generated or checksummed file."""
    wanted = {MONITORING / "operator" / "prometheusrule.yaml": prometheus_rule()}
    for name, (deployment, config_file, _) in COMPONENTS.items():
        config = config_map(name)
        wanted[MONITORING / config_file] = config
        wanted[MONITORING / deployment] = with_checksum((MONITORING / deployment).read_text(), config)
    return wanted


def main(argv: list[str]) -> int:
    """Write the files, or with --check exit 1 if any is out of date."""
    stale = [path for path, text in render().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python scripts/monitoring_manifests.py")
        return 1 if stale else 0
    for path, text in render().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
