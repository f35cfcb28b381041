"""The workers' sink in the manifests, offline: an emptyDir by default, and a PersistentVolumeClaim variant that
differs from the worker's Deployment in its sink volume and rollout strategy only."""

from __future__ import annotations

import copy

import pytest
from k8s_support import EXAMPLES, ROOT, objects

pytestmark = pytest.mark.k8s

EXAMPLE = "worker-sink-pvc.yaml"


def deployment(folder, name: str = "machine-1") -> dict:
    (found,) = [d for d in objects("Deployment", folder) if d["metadata"]["name"] == name]
    return found


def test_the_pvc_example_is_the_worker_with_its_sink_on_a_claim():
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((EXAMPLES / EXAMPLE).read_text())}
    claim, variant = docs["PersistentVolumeClaim"], docs["Deployment"]
    assert variant == deployment(EXAMPLES)
    expected = copy.deepcopy(deployment(ROOT / "infra" / "k8s"))
    expected["spec"].pop("strategy", None)
    expected["spec"]["strategy"] = {"type": "Recreate"}  # one node holds a ReadWriteOnce volume: never two pods
    for volume in expected["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "sink":
            assert "emptyDir" in volume, "infra/k8s keeps the sink on an emptyDir"
            volume.pop("emptyDir")
            volume["persistentVolumeClaim"] = {"claimName": claim["metadata"]["name"]}
    assert variant == expected, f"{EXAMPLE} must be 30-machine-1.yaml's Deployment with only the sink changed"
    assert variant["spec"]["replicas"] == 1
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_manifests_and_the_operations_guide_say_the_same_of_the_sink():
    page = (ROOT / "docs" / "operations.md").read_text()
    assert f"infra/k8s/examples/{EXAMPLE}" in page
    for name in ("30-machine-1.yaml", "31-machine-2.yaml"):
        text = (ROOT / "infra" / "k8s" / name).read_text()
        assert "not the record" not in text
        assert "docs/operations.md" in text and EXAMPLE in text
