"""/metrics: valid Prometheus text, and exactly the metrics docs/monitoring.md documents, each once."""

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from numcast import admin
from numcast.settings import from_env
from numcast_alerter import create_app as alerter_app
from numcast_alerter.settings import AlerterSettings
from numcast_control import create_app as control_app
from numcast_control.settings import ControlSettings
from numcast_worker import create_app as worker_app
from numcast_worker.settings import WorkerSettings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
# threading: the same routes and metrics, and no eventlet imported into the test process (which forks servers).
APPS = {
    "control": lambda: control_app(from_env(ControlSettings, {}, async_mode="threading")),
    "worker": lambda: worker_app(from_env(WorkerSettings, {"WORKER_NAME": "w"}, async_mode="threading")),
    "alerter": lambda: alerter_app(
        from_env(AlerterSettings, {"ALERTMANAGER_URL": "http://127.0.0.1:9"}, async_mode="threading")
    ),
}
# The service column names one service, several ("worker, alerter"), "both" (control and worker) or "all".
GROUPS = {"both": ("control", "worker"), "all": tuple(APPS)}


def rows() -> list[tuple[list[str], str]]:
    """(metric names, services) of each row of the metrics table."""
    table = PAGE.read_text().split("Metrics, all prefixed `numcast_`:", 1)[1].split("\n\n", 2)[1]
    found = []
    for row in table.splitlines()[2:]:
        names, services = row.split("|")[1:3]
        found.append((re.findall(r"`([a-z_]+)(?:\{[a-z,]+\})?`", names), services))
    return found


def documented() -> dict[str, set[str]]:
    """{service: metric names} from the metrics table, `_total` removed as the parser does."""
    found: dict[str, set[str]] = {service: set() for service in APPS}
    for names, services in rows():
        for name in names:
            for service in services.split(","):
                for each in GROUPS.get(service.strip(), (service.strip(),)):
                    found[each].add("numcast_" + name.removesuffix("_total"))
    return found


ADMIN = {admin.ENVIRON: True}  # what the admin port (ADMIN_PORT) marks its requests with


@pytest.mark.parametrize("service", APPS)
def test_metrics_are_valid_text_and_match_the_docs(service):
    response = APPS[service]().test_client().get("/metrics", environ_base=ADMIN)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    families = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    served = {name for name in families if name.startswith("numcast_")}
    assert served == documented()[service]
    assert not any(name.endswith("_created") for name in families)


@pytest.mark.parametrize("service", APPS)
def test_the_public_port_serves_no_metrics(service):
    # Metrics and the full status are the admin port's (numcast.admin): not for whoever reaches the NodePort.
    client = APPS[service]().test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_every_metric_has_one_row():
    names = [name for row_names, _ in rows() for name in row_names]
    assert len(names) == len(set(names)), sorted({name for name in names if names.count(name) > 1})


def samples(app) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of an app's /metrics."""
    text = app.test_client().get("/metrics", environ_base=ADMIN).get_data(as_text=True)
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_the_alerter_serves_every_label_value_it_knows_at_zero_from_the_start():
    # A series that appears at its first increment is invisible to increase(): the first drop, error or refusal
    # would never fire an alert. Every known value exists, at 0, before anything happens.
    urls = ("http://alertmanager-0.peers:9093", "http://alertmanager-1.peers:9093")
    settings = from_env(AlerterSettings, {"ALERTMANAGER_URLS": ",".join(urls)}, async_mode="threading")
    found = samples(alerter_app(settings))

    def served_at_zero(name: str, label_sets: list[dict]) -> None:
        for labels in label_sets:
            assert found.get(name, {}).get(tuple(sorted(labels.items()))) == 0, f"{name}{labels} is not served at 0"

    served_at_zero("numcast_dropped_total", [{"path": p} for p in ("redis", "alertmanager")])
    served_at_zero("numcast_publish_errors_total", [{"path": "redis"}])
    served_at_zero("numcast_reconnects_total", [{"path": "redis"}])
    served_at_zero("numcast_received_total", [{"path": p} for p in ("redis", "webhook")])
    served_at_zero("numcast_alerts_published_total", [{"origin": o} for o in ("stream", "alertmanager")])
    served_at_zero("numcast_rule_reloads_total", [{"result": r} for r in ("ok", "error")])
    served_at_zero("numcast_alerts_expired_total", [{"reason": r} for r in ("sync", "lease")])
    for name in ("numcast_alertmanager_sent_total", "numcast_alertmanager_errors_total", "numcast_alertmanager_queued"):
        served_at_zero(name, [{"url": u} for u in urls])
    served_at_zero("numcast_alert_rules", [{"state": s} for s in ("inactive", "pending", "firing")])
    assert found.get("numcast_rule_reload_successful") == {(): 1}

    from numcast import alerts, envelope

    served_at_zero("numcast_rejected_total", [{"path": "redis", "reason": r} for r in envelope.REASONS])
    served_at_zero("numcast_rejected_total", [{"path": "webhook", "reason": r} for r in alerts.WEBHOOK_REASONS])


@pytest.mark.parametrize(
    ("module", "error"),
    [
        ("libs/numcast/envelope.py", "EnvelopeError"),
        ("libs/numcast/alerts.py", "AlertError"),
        ("services/alerter/numcast_alerter/service.py", "AlertError"),
    ],
)
def test_every_reason_the_code_raises_is_declared_so_its_counter_starts_at_zero(module, error):
    from numcast import alerts, envelope

    text = (PAGE.parents[1] / module).read_text()
    raised = set(re.findall(rf'{error}\(\s*"([a-z_]+)"', text)) | set(re.findall(rf'{error}\(\s*f"(bad_)\{{', text))
    if "bad_" in raised:  # f"bad_{field}" for labels and annotations
        raised = raised - {"bad_"} | {"bad_labels", "bad_annotations"}
    declared = envelope.REASONS if error == "EnvelopeError" else alerts.REASONS
    assert raised and raised <= set(declared), sorted(raised - set(declared))
    assert set(alerts.WEBHOOK_REASONS) <= set(alerts.REASONS)
