"""Settings: env vars parsed and validated once, with errors that name the variable."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from numcast.settings import SettingsError, from_env
from numcast_alerter.settings import AlerterSettings
from numcast_control.settings import ControlSettings
from numcast_worker.settings import WorkerSettings


def test_defaults_match_the_contract():
    control = from_env(ControlSettings, {})
    assert (control.port, control.rate_hz, control.value_min, control.value_max) == (8000, 1.0, 0.0, 100.0)
    assert control.channel == "numbers"
    worker = from_env(WorkerSettings, {"WORKER_NAME": "machine-1"})
    assert (worker.port, worker.tcp_port, worker.worker_name) == (8080, 9000, "machine-1")
    alerter = from_env(AlerterSettings, {})
    assert (alerter.port, alerter.alerts_channel, alerter.alert_rules, alerter.alertmanager_url) == (
        8090,
        "alerts",
        "",
        "",
    )
    assert alerter.resend_seconds == 60


def test_values_are_parsed_from_the_environment():
    settings = from_env(
        ControlSettings,
        {
            "RATE_HZ": "250",
            "VALUE_MIN": "-1",
            "TCP_MIRROR_TARGETS": "machine-1:9000, [::1]:9001",
            "MIRROR_KEY_FILE": "/run/mirror/keys",
            "LOG_LEVEL": "debug",
        },
    )
    assert settings.rate_hz == 250.0
    assert settings.tcp_mirror_targets == (("machine-1", 9000), ("::1", 9001))
    assert settings.log_level == "DEBUG"


def test_worker_name_defaults_to_the_host_name():
    assert from_env(WorkerSettings, {}).worker_name


@pytest.mark.parametrize(
    ("cls", "environ", "variable"),
    [
        (ControlSettings, {"TCP_MIRROR_TARGETS": "machine-1:9000"}, "MIRROR_KEY_FILE"),
        (ControlSettings, {"RATE_HZ": "fast"}, "RATE_HZ"),
        (ControlSettings, {"RATE_HZ": "0"}, "RATE_HZ"),
        (ControlSettings, {"RATE_HZ": "inf"}, "RATE_HZ"),
        (ControlSettings, {"RATE_HZ": "100000"}, "RATE_HZ"),
        (ControlSettings, {"VALUE_MIN": "10", "VALUE_MAX": "1"}, "VALUE_MIN"),
        (ControlSettings, {"PORT": "70000"}, "PORT"),
        (ControlSettings, {"PORT": "eighty"}, "PORT"),
        (ControlSettings, {"TCP_MIRROR_TARGETS": "machine-1"}, "TCP_MIRROR_TARGETS"),
        (ControlSettings, {"REDIS_URL": "http://redis"}, "REDIS_URL"),
        (ControlSettings, {"CHANNEL": "no spaces"}, "CHANNEL"),
        (ControlSettings, {"ASYNC_MODE": "gevent"}, "ASYNC_MODE"),
        (ControlSettings, {"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        (ControlSettings, {"HTTP_MAX_CONNECTIONS": "8"}, "HTTP_MAX_CONNECTIONS"),
        (AlerterSettings, {"HTTP_HEADER_TIMEOUT": "0"}, "HTTP_HEADER_TIMEOUT"),
        (AlerterSettings, {"HTTP_HEADER_TIMEOUT": "nan"}, "HTTP_HEADER_TIMEOUT"),
        (WorkerSettings, {"MAX_BROWSERS": "5000"}, "HTTP_MAX_CONNECTIONS"),  # no room left beyond the browsers
        (WorkerSettings, {"WORKER_NAME": "<b>x</b>"}, "WORKER_NAME"),
        (WorkerSettings, {"TCP_PORT": "0"}, "TCP_PORT"),
        (WorkerSettings, {"HISTORY_SIZE": "0"}, "HISTORY_SIZE"),
        (WorkerSettings, {"SINK_MAX_BYTES": "10"}, "SINK_MAX_BYTES"),
        (WorkerSettings, {"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        (WorkerSettings, {"CLIENT_QUEUE": "5"}, "CLIENT_QUEUE"),
        (WorkerSettings, {"ALERTS_CHANNEL": "numbers"}, "ALERTS_CHANNEL"),
        (AlerterSettings, {"ALERTS_CHANNEL": "no spaces"}, "ALERTS_CHANNEL"),
        (AlerterSettings, {"ALERTMANAGER_URL": "alertmanager:9093"}, "ALERTMANAGER_URL"),
        (AlerterSettings, {"EXTERNAL_URL": "javascript:alert(1)"}, "EXTERNAL_URL"),
        (AlerterSettings, {"RESEND_SECONDS": "0"}, "RESEND_SECONDS"),
        (AlerterSettings, {"ALERTMANAGER_QUEUE": "1"}, "ALERTMANAGER_QUEUE"),
        (WorkerSettings, {"SINK_BUFFER_BYTES": "1000"}, "SINK_BUFFER_BYTES"),
        (ControlSettings, {"STREAM_MAXLEN": "-1"}, "STREAM_MAXLEN"),
        (ControlSettings, {"REDIS_PASSWORD_FILE": "/nonexistent/redis-password"}, "REDIS_PASSWORD_FILE"),
        (WorkerSettings, {"REDIS_PASSWORD_FILE": "/"}, "REDIS_PASSWORD_FILE"),  # a folder: unreadable as a file
        (AlerterSettings, {"REDIS_PASSWORD_FILE": "/dev/null"}, "REDIS_PASSWORD_FILE"),  # empty
        (WorkerSettings, {"REDIS_USERNAME": "two words"}, "REDIS_USERNAME"),
        (WorkerSettings, {"REDIS_SENTINELS": "sentinel-0"}, "REDIS_SENTINELS"),  # no port
        (ControlSettings, {"REDIS_SENTINELS": "s:26379,s:0"}, "REDIS_SENTINELS"),
        (AlerterSettings, {"REDIS_SENTINELS": ",".join(f"s{n}:26379" for n in range(17))}, "REDIS_SENTINELS"),
        (WorkerSettings, {"REDIS_MASTER_NAME": "<b>"}, "REDIS_MASTER_NAME"),
        (WorkerSettings, {"REDIS_SENTINEL_USERNAME": "a b"}, "REDIS_SENTINEL_USERNAME"),
        (ControlSettings, {"REDIS_SENTINEL_PASSWORD_FILE": "/dev/null"}, "REDIS_SENTINEL_PASSWORD_FILE"),
        (ControlSettings, {"LEASE_SECONDS": "0.1"}, "LEASE_SECONDS"),
        (ControlSettings, {"LEASE_SECONDS": "-1"}, "LEASE_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(cls, environ, variable):
    with pytest.raises(SettingsError, match=rf"^{variable}="):
        from_env(cls, {"WORKER_NAME": "w", **environ})


@pytest.mark.parametrize(
    ("prefix", "ok"),
    [
        ("control", True),
        ("ops.eu-1:blue_2", True),  # every character a source may hold
        ("x" * 52, True),  # with "-", six hex digits and the push stream's ".push": 64, the longest source
        ("x" * 53, False),
        ("with space", False),
        ("<b>", False),
        ("control\n", False),  # the same full-string rule as a source: no trailing newline
    ],
)
def test_source_prefix_follows_the_rule_of_a_source(prefix, ok):
    from numcast.envelope import decode
    from numcast.push import stream
    from numcast_control.generator import new_source

    if ok:
        source = new_source(from_env(ControlSettings, {}, source_prefix=prefix).source_prefix)
        for each in (source, stream.source(source)):
            assert decode(json.dumps({"seq": 1, "value": 1, "ts": 1, "source": each})).source == each
    else:
        with pytest.raises(SettingsError, match=r"^SOURCE_PREFIX="):
            from_env(ControlSettings, {}, source_prefix=prefix)


def test_a_channel_with_a_trailing_newline_is_refused():
    with pytest.raises(SettingsError, match=r"^CHANNEL="):
        from_env(ControlSettings, {}, channel="numbers\n")


def test_the_configuration_tables_are_generated_from_the_settings():
    script = Path(__file__).resolve().parents[2] / "scripts" / "settings_tables.py"
    spec = importlib.util.spec_from_file_location("settings_tables", script)
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    page = tables.PAGE.read_text()
    assert tables.render(page) == page, "run: python scripts/settings_tables.py"
    for cls in (ControlSettings, WorkerSettings, AlerterSettings):
        for f in dataclasses.fields(cls):
            assert f"| `{f.metadata['env']}` |" in page


def test_redis_credentials_come_from_the_file_then_the_env_then_the_url(tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("from-file\n")  # `kubectl create secret --from-file` keeps a trailing newline
    url = "redis://url-user:from%40url@redis:6379/0"

    def credentials(**environ):
        settings = from_env(ControlSettings, {"REDIS_URL": url, **environ})
        return settings.redis.url, settings.redis.get_credentials()

    assert credentials() == ("redis://redis:6379/0", ("url-user", "from@url"))
    assert credentials(REDIS_PASSWORD="from-env") == ("redis://redis:6379/0", ("url-user", "from-env"))
    both = {"REDIS_PASSWORD": "from-env", "REDIS_PASSWORD_FILE": str(password_file), "REDIS_USERNAME": "control"}
    assert credentials(**both) == ("redis://redis:6379/0", ("control", "from-file"))
    password_file.write_text("rotated")  # read at each connection: a rotated Secret needs no restart
    assert credentials(**both)[1] == ("control", "rotated")


def test_redis_secrets_stay_out_of_the_repr_and_the_logged_url(tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-in-file")
    environ = {"REDIS_PASSWORD": "s3cret-in-env", "REDIS_PASSWORD_FILE": str(password_file), "REDIS_USERNAME": "worker"}
    settings = from_env(WorkerSettings, {"WORKER_NAME": "w", **environ})
    shown = repr(settings) + repr(settings.redis) + str(settings.redis)
    assert "s3cret" not in shown and str(password_file) not in repr(settings)
    assert str(settings.redis) == "redis://worker@127.0.0.1:6379/0"


def test_sentinels_make_an_endpoint_that_asks_them_and_never_shows_a_password(tmp_path):
    secret = tmp_path / "sentinel.password"
    secret.write_text("s3cret-sentinel\n")
    settings = from_env(
        WorkerSettings,
        {
            "WORKER_NAME": "w",
            "REDIS_URL": "redis://ignored:1/2",
            "REDIS_USERNAME": "worker",
            "REDIS_PASSWORD": "s3cret-redis",
            "REDIS_SENTINELS": "sentinel-0:26379, [::1]:26380",
            "REDIS_SENTINEL_PASSWORD_FILE": str(secret),
        },
    )
    endpoint = settings.redis
    assert endpoint.sentinels.addresses == (("sentinel-0", 26379), ("::1", 26380))
    assert endpoint.sentinels.master == "numcast" and endpoint.db == 2
    assert endpoint.sentinels.get_credentials() == ("s3cret-sentinel",)
    assert endpoint.get_credentials() == ("worker", "s3cret-redis")
    assert endpoint.label == "sentinel://sentinel-0:26379,::1:26380/numcast (worker@db 2)"
    assert "s3cret" not in repr(settings) + repr(endpoint) + endpoint.label


def test_a_database_number_in_other_digits_than_ascii_is_not_read_as_one():
    from numcast.redis_conn import Endpoint

    assert Endpoint("redis://h:1/3").db == 3
    assert Endpoint("redis://h:1/\u0663").db == 0, "an Arabic-Indic three is no database number"
    assert Endpoint("redis://h:1/").db == 0
