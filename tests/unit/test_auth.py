"""The token for every change: settings, the token file, and the guard in front of every route that changes."""

from __future__ import annotations

import pytest

from numcast import admin, auth
from numcast.settings import SettingsError, from_env
from numcast_alerter import create_app as alerter_app
from numcast_alerter.settings import AlerterSettings
from numcast_control import create_app as control_app
from numcast_control.settings import ControlSettings

TOKEN = "s3cret-token-0123456789"
SETTINGS = {"control": ControlSettings, "alerter": AlerterSettings}
APPS = {"control": control_app, "alerter": alerter_app}


def app(service: str, **environ: str):
    return APPS[service](from_env(SETTINGS[service], environ, async_mode="threading"))


def changes(flask_app) -> list[tuple[str, str]]:
    """(method, path) of every route that changes something: what a token must guard, today's and later ones."""
    found = []
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint.startswith("push."):
            continue  # the push doors answer to PUSH_TOKEN instead (tests/unit/test_push_doors.py)
        for method in sorted(rule.methods - auth.SAFE_METHODS):
            found.append((method, rule.rule))
    return found


@pytest.mark.parametrize("service", SETTINGS)
@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"CONTROL_TOKEN": "short"}, "CONTROL_TOKEN: must be 16-1024 characters, not 5"),
        ({"CONTROL_TOKEN": "x" * 1025}, "CONTROL_TOKEN: must be 16-1024 characters"),
        ({"CONTROL_TOKEN": "has spaces in the middle"}, "CONTROL_TOKEN: may hold only"),
        ({"CONTROL_TOKEN": "quote'in-the-token-here"}, "CONTROL_TOKEN: may hold only"),
        ({"CONTROL_TOKEN": TOKEN, "CONTROL_TOKEN_FILE": "/run/token"}, "are both set"),
    ],
    ids=["short", "long", "space", "quote", "both"],
)
def test_a_bad_token_setting_is_refused_naming_the_variable_and_never_the_token(service, environ, words):
    with pytest.raises(SettingsError) as caught:
        from_env(SETTINGS[service], environ)
    assert words in str(caught.value)
    assert environ["CONTROL_TOKEN"] not in str(caught.value)


def test_the_token_never_shows_in_the_settings_repr():
    settings = from_env(ControlSettings, {"CONTROL_TOKEN": TOKEN})
    assert settings.control_token == TOKEN and TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("content", "token"),
    [
        (TOKEN + "\n", TOKEN),
        (TOKEN, TOKEN),
        (TOKEN + "\r\n", TOKEN),
        ("YWJjZGVmZ2hpamtsbW5vcA==\n", "YWJjZGVmZ2hpamtsbW5vcA=="),
    ],
    ids=["newline", "bare", "crlf", "base64"],
)
def test_the_token_file_is_read_with_its_trailing_newline_dropped(tmp_path, content, token):
    path = tmp_path / "token"
    path.write_bytes(content.encode())
    assert auth.load("", str(path)) == token.encode()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read it: No such file or directory"),
        (b"", "must be 16-1024 characters, not 0"),
        (b"\n", "must be 16-1024 characters, not 0"),
        (b"x" * 5000, "must be 16-1024 characters, not 1027"),
        (b"two-lines-of-token\nsecond-line-here\n", "may hold only"),
        ("t\u00f6ken-with-an-umlaut-x".encode(), "may hold only"),
    ],
    ids=["missing", "empty", "newline-only", "long", "two-lines", "not-ascii"],
)
def test_a_bad_token_file_stops_the_start_naming_the_variable_and_not_the_content(tmp_path, content, words):
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        app("control", CONTROL_TOKEN_FILE=str(path))
    assert str(caught.value).startswith(f"CONTROL_TOKEN_FILE={str(path)!r}: ")
    assert words in str(caught.value)
    assert "second-line" not in str(caught.value) and "xxxxxxxxxxxxxxxx" not in str(caught.value)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("192.0.2.2", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("localhost", False),  # a name is not an address: the TCP peer is always one
    ],
)
def test_loopback_means_the_loopback_addresses(address, expected):
    assert auth.loopback(address) is expected


@pytest.mark.parametrize("service", APPS)
def test_every_route_that_changes_needs_the_token(service):
    flask_app = app(service, CONTROL_TOKEN=TOKEN)
    client = flask_app.test_client()
    routes = changes(flask_app)
    assert routes == {"control": [("PATCH", "/api/config")], "alerter": [("POST", "/api/alertmanager")]}[service]
    for method, path in routes:
        for headers, reason in (({}, "missing"), ({"Authorization": f"Basic {TOKEN}"}, "missing")):
            response = client.open(path, method=method, json={}, headers=headers)
            assert response.status_code == 401 and response.json["reason"] == reason
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="numcast"'
        for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "Bearer"):
            response = client.open(path, method=method, json={}, headers={"Authorization": f"Bearer {wrong}"})
            assert response.status_code == 401 and response.json["reason"] == "wrong"
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="numcast", error="invalid_token"'
        # From anywhere, with the token: past the guard, to the view (which judges the body).
        far = {"REMOTE_ADDR": "10.0.0.1"}
        response = client.open(
            path, method=method, json={}, headers={"Authorization": f"bearer {TOKEN}"}, environ_base=far
        )
        assert response.status_code not in (401, 403), response.json
    metrics = client.get("/metrics", environ_base={admin.ENVIRON: True}).get_data(as_text=True)
    assert f'numcast_auth_refused_total{{reason="missing"}} {2.0 * len(routes)}' in metrics
    assert f'numcast_auth_refused_total{{reason="wrong"}} {4.0 * len(routes)}' in metrics


@pytest.mark.parametrize("service", APPS)
def test_without_a_token_changes_come_from_loopback_and_the_same_site_only(service):
    flask_app = app(service)
    client = flask_app.test_client()
    ((method, path),) = changes(flask_app)
    refused = [
        ({"REMOTE_ADDR": "192.0.2.2"}, {}, "not_loopback"),
        ({"REMOTE_ADDR": "192.0.2.2"}, {"Authorization": f"Bearer {TOKEN}"}, "not_loopback"),
        ({}, {"X-Forwarded-For": "127.0.0.1", "Host": "evil.example"}, "cross_origin"),
        ({}, {"Origin": "http://evil.example"}, "cross_origin"),
        ({}, {"Origin": "null"}, "cross_origin"),
        ({}, {"Host": "rebound.example:8000", "Origin": "http://rebound.example:8000"}, "cross_origin"),
    ]
    for environ, headers, reason in refused:
        response = client.open(path, method=method, json={}, headers=headers, environ_base=environ)
        assert response.status_code == 403 and response.json["reason"] == reason, (environ, headers)
        assert "set CONTROL_TOKEN (or CONTROL_TOKEN_FILE" in response.json["error"]
    # X-Forwarded-For never makes a far client local.
    response = client.open(
        path, method=method, json={}, headers={"X-Forwarded-For": "127.0.0.1"}, environ_base=refused[0][0]
    )
    assert response.status_code == 403
    allowed = [
        {},
        {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"},
        {"Host": "[::1]:8000"},
        {"Host": "localhost:8000", "Origin": "http://localhost:8000"},
    ]
    for headers in allowed:
        assert client.open(path, method=method, json={}, headers=headers).status_code not in (401, 403), headers


@pytest.mark.parametrize(("service", "status"), [("control", "/api/status"), ("alerter", "/api/alerts")])
def test_reads_stay_open_and_say_whether_changes_need_the_token(service, status):
    for environ, mode in (({"CONTROL_TOKEN": TOKEN}, "token"), ({}, "loopback")):
        client = app(service, **environ).test_client()
        far = {"REMOTE_ADDR": "10.0.0.1"}
        for path in ("/", "/healthz", "/api/alerts"):
            assert client.get(path, environ_base=far).status_code == 200, path
        assert client.get(status, environ_base=far).json["auth"] == mode
        assert client.open("/api/alerts", method="OPTIONS", environ_base=far).status_code == 200


def test_a_token_file_is_read_again_when_it_changes_and_an_unusable_one_keeps_the_previous_token(tmp_path):
    path = tmp_path / "token"
    path.write_text("first-token-0123456789\n")
    token = auth.Token("", str(path))
    assert token.get() == b"first-token-0123456789"
    replacement = tmp_path / "new"
    replacement.write_text("second-token-0123456789\n")
    replacement.replace(path)  # a new inode, as a Secret's symlink swap gives
    assert token.get() == b"second-token-0123456789"
    path.write_text("short\n")  # a half-written or wrong file: refused, the token in force stays
    assert token.get() == b"second-token-0123456789"
    path.unlink()
    assert token.get() == b"second-token-0123456789"
    assert auth.Token("set-in-env-0123456789", "").get() == b"set-in-env-0123456789"
