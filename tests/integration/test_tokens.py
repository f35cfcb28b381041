"""The token for every change, against real processes: the control-plane's PATCH and the alerter's webhook."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest
from conftest import NUMCAST, eventually, http
from needs import missing

from numcast import auth

TOKEN = "integration-token-0123456789"
ALERT = {
    "status": "firing", "labels": {"alertname": "ByHand"}, "annotations": {}, "fingerprint": "0123456789abcdef",
    "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
}  # fmt: skip
# service: (method, path, body) of its one change today
CHANGES = {
    "control": ("PATCH", "/api/config", {"rate_hz": 7}),
    "alerter": ("POST", "/api/alertmanager", {"version": "4", "alerts": [ALERT]}),
}


def own_address() -> str:
    """A non-loopback IPv4 address of this machine: a client connecting to it has that address as its peer."""
    candidates = []
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # UDP: nothing is sent, the kernel only picks the route's address
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    if shutil.which("ip"):
        found = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
        candidates += [line.split()[3].partition("/")[0] for line in found.stdout.splitlines()]
    for address in candidates:
        if not auth.loopback(address):
            return address
    missing("this machine has no non-loopback IPv4 address, so no client here can connect from outside loopback")


class Change:
    """One service's change, and what tells whether it happened."""

    def __init__(self, kind: str, service, redis_server) -> None:
        self.kind, self.service = kind, service
        self.method, self.path, self.body = CHANGES[kind]
        self.listener = None
        if kind == "alerter":
            self.listener = redis_server.client().pubsub(ignore_subscribe_messages=True)
            self.listener.subscribe("alerts")
            self.listener.get_message(timeout=1.0)  # the subscription's confirmation

    def send(self, base: str | None = None, **headers: str):
        return http(self.method, (base or self.service.url) + self.path, self.body, headers)

    def happened(self) -> bool:
        """True once the change took effect: the new rate, or the alert on the `alerts` channel."""
        if self.kind == "control":
            return self.service.json("/api/status")["config"]["rate_hz"] == 7
        # The built-in rules publish too (a silent stream fires after 5 s): look for this alert only.
        while message := self.listener.get_message(timeout=0.5):
            if json.loads(message["data"])["alertname"] == "ByHand":
                return True
        return False

    def refused(self, reason: str) -> float:
        return self.service.metric("numcast_auth_refused_total", f'reason="{reason}"')


@pytest.mark.parametrize("kind", CHANGES)
def test_with_a_token_a_change_needs_it_and_a_refused_one_changes_nothing(redis_server, services, tmp_path, kind):
    if kind == "control":  # the control-plane from a file (as Kubernetes mounts it), the alerter from the variable
        (tmp_path / "token").write_text(TOKEN + "\n")
        service = services(kind, redis_server.url, CONTROL_TOKEN_FILE=str(tmp_path / "token"))
    else:
        service = services(kind, redis_server.url, wait="/readyz", CONTROL_TOKEN=TOKEN)
    change = Change(kind, service, redis_server)

    status, body = change.send()
    assert (status, body["reason"]) == (401, "missing") and "Authorization: Bearer" in body["error"]
    for wrong in (TOKEN[:-1] + "x", "nothing-like-the-token"):
        status, body = change.send(Authorization=f"Bearer {wrong}")
        assert (status, body["reason"]) == (401, "wrong")
    assert not change.happened(), "a refused change changes nothing"
    assert (change.refused("missing"), change.refused("wrong")) == (1, 2)

    status, body = change.send(Authorization=f"Bearer {TOKEN}")
    assert status == 200, body
    eventually(change.happened, message="the change with the token")
    for read in ("/", "/metrics", "/api/alerts"):
        assert service.get(read)[0] == 200, f"{read} stays open"
    logs = service.logs()
    assert "change refused reason=missing peer=127.0.0.1" in logs and "change refused reason=wrong" in logs
    assert TOKEN not in logs and "nothing-like-the-token" not in logs, "the log never holds a token"


def test_the_401_carries_the_bearer_challenge(redis_server, services):
    import urllib.error
    import urllib.request

    control = services("control", redis_server.url, CONTROL_TOKEN=TOKEN)
    request = urllib.request.Request(control.url + "/api/config", b'{"paused": true}', method="PATCH")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer realm="numcast"'
    assert refused.value.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("kind", CHANGES)
def test_without_a_token_only_a_loopback_client_may_change(redis_server, services, kind):
    address = own_address()
    wait = "/readyz" if kind == "alerter" else "/healthz"
    service = services(kind, redis_server.url, wait=wait, HOST="0.0.0.0")  # reachable from outside loopback
    change = Change(kind, service, redis_server)

    far = f"http://{address}:{service.port}"
    status, body = change.send(far, **{"X-Forwarded-For": "127.0.0.1"})  # a header is whatever the client wrote
    assert (status, body["reason"]) == (403, "not_loopback")
    assert "set CONTROL_TOKEN (or CONTROL_TOKEN_FILE" in body["error"]
    assert not change.happened()
    assert change.refused("not_loopback") == 1
    assert f"change refused reason=not_loopback peer={address}" in service.logs()
    assert http("GET", far + "/healthz")[0] == 200, "reads stay open from anywhere"

    status, body = change.send()  # the same change from 127.0.0.1
    assert status == 200, body
    eventually(change.happened, message="the change from loopback")


@pytest.mark.parametrize("command", ["control", "alerter"])
@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CONTROL_TOKEN": "short"}, "CONTROL_TOKEN: must be 16-1024 characters, not 5"),
        ({"CONTROL_TOKEN": TOKEN, "CONTROL_TOKEN_FILE": "/nonexistent"}, "are both set"),
        ({"CONTROL_TOKEN_FILE": "/nonexistent/token"}, "CONTROL_TOKEN_FILE='/nonexistent/token': cannot read it"),
    ],
    ids=["short", "both", "missing-file"],
)
def test_a_bad_token_setting_stops_the_start_with_a_message_naming_it(command, env, words):
    environ = {**os.environ, "PORT": "1", **env}  # it must stop before it would bind anything
    result = subprocess.run([NUMCAST, command], env=environ, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"numcast {command}: invalid setting" in result.stderr and words in result.stderr
    assert TOKEN not in result.stderr, "an error never repeats the token"


def test_the_webhook_json_is_judged_only_after_the_token(redis_server, services):
    alerter = services("alerter", redis_server.url, wait="/readyz", CONTROL_TOKEN=TOKEN)
    status, body = http("POST", alerter.url + "/api/alertmanager", b"{not json")
    assert (status, body["reason"]) == (401, "missing"), "a stranger learns nothing about the body it sent"
    assert alerter.metric("numcast_rejected_total", 'path="webhook",reason="not_json"') == 0
    status, body = http("POST", alerter.url + "/api/alertmanager", b"{not json", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 400 and body["error"].startswith("not_json: body is not valid JSON")
    assert body["reason"] == "not_json"
