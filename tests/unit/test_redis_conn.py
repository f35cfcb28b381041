"""The Redis connection's credentials: where they come from, what is logged, and what is sent on connecting."""

import socket
import threading

import pytest

from numcast.redis_conn import Endpoint, client, redact


@pytest.mark.parametrize(
    ("url", "given", "expected"),
    [
        ("redis://redis:6379/0", {}, ("redis://redis:6379/0", "", "")),
        ("redis://u:p%40ss@redis:6379/0", {}, ("redis://redis:6379/0", "u", "p@ss")),
        ("redis://:p@redis:6379/0", {"username": "worker"}, ("redis://redis:6379/0", "worker", "p")),
        ("redis://u:p@redis:6379/0", {"username": "w", "password": "q"}, ("redis://redis:6379/0", "w", "q")),
        ("unix:///run/redis.sock?db=0", {"password": "q"}, ("unix:///run/redis.sock?db=0", "", "q")),
    ],
)
def test_given_credentials_win_over_the_url_s(url, given, expected):
    endpoint = Endpoint.parse(url, **given)
    assert (endpoint.url, endpoint.username, endpoint.password) == expected


def test_the_label_names_the_user_never_the_password():
    endpoint = Endpoint.parse("redis://worker:s3cret@redis:6379/0")
    assert redact(endpoint) == str(endpoint) == "redis://worker@redis:6379/0"
    assert "s3cret" not in repr(endpoint)


def test_a_client_authenticates_and_sends_no_client_command():
    """A least-privilege user has no CLIENT (SETINFO, MAINT_NOTIFICATIONS): the connection must not send it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        received = bytearray()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                while data := conn.recv(65536):
                    received.extend(data)
                    conn.sendall(b"+OK\r\n" * data.count(b"*"))  # one reply per command (each is an array)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        conn = client(Endpoint(f"redis://127.0.0.1:{server.getsockname()[1]}/0", "worker", "pw"))
        conn.ping()
        conn.close()
        thread.join(5)
    assert b"AUTH\r\n$6\r\nworker\r\n$2\r\npw" in received
    assert b"PING" in received and b"CLIENT" not in received.upper(), bytes(received)
