"""/metrics: valid Prometheus text, and exactly the metrics docs/monitoring.md documents, each once."""

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

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


@pytest.mark.parametrize("service", APPS)
def test_metrics_are_valid_text_and_match_the_docs(service):
    response = APPS[service]().test_client().get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    families = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    served = {name for name in families if name.startswith("numcast_")}
    assert served == documented()[service]
    assert not any(name.endswith("_created") for name in families)


def test_every_metric_has_one_row():
    names = [name for row_names, _ in rows() for name in row_names]
    assert len(names) == len(set(names)), sorted({name for name in names if names.count(name) > 1})
