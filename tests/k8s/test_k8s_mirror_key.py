"""The TCP mirror's key in the manifests, offline: one Secret, mounted into the control-plane and the workers only."""

from __future__ import annotations

import pytest
from k8s_support import (
    HA,
    MANIFESTS,
    ROOT,
    collected,
    container_command,
    container_env,
    every_container,
    named,
    numcast_containers,
)
from test_k8s_redis_acl import secrets_referenced
from test_k8s_tokens import mounted_secret, secret_value

from numcast import mirror_key

pytestmark = pytest.mark.k8s

SECRET = "numcast-mirror-key"


@pytest.mark.parametrize("container", collected(every_container), ids=lambda c: c.id)
def test_only_the_control_plane_and_the_workers_can_read_the_mirror_key(container):
    ours = {c.id for c in numcast_containers() + numcast_containers(HA)}
    command = container_command(container) if container.id in ours else ""
    readers = SECRET in secrets_referenced(container)
    if command in ("control", "worker"):
        env = container_env(container)
        assert mounted_secret(container, env[mirror_key.FILE_VAR]) == (SECRET, "keys")
    else:
        assert not readers, f"{container.id} can read the mirror key"


def test_the_mirror_key_is_usable_and_marked_for_development_and_its_rotation_documented():
    keys = mirror_key.parse(secret_value(SECRET, "keys").encode(), SECRET)
    assert len(keys) == 1
    assert (MANIFESTS / "07-mirror-key.yaml").read_text().startswith("# DEVELOPMENT KEY ONLY.")
    assert named("Secret", SECRET)["metadata"]["namespace"] == "numcast"
    page = (ROOT / "docs" / "security.md").read_text()
    assert f"kubectl -n numcast create secret generic {SECRET} " in page
