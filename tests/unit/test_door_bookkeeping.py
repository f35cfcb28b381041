"""The doors' bookkeeping, on real socket pairs: who is closed to make room, who times out, who is refused."""

import socket
import time

import pytest

from numcast.doors import Doors
from numcast.metrics import Metrics


@pytest.fixture
def pairs():
    """A factory of connected socket pairs (server side, client side), all closed after the test."""
    made = []

    def make():
        pair = socket.socketpair()
        made.append(pair)
        return pair

    yield make
    for server, client in made:
        server.close()
        client.close()


def ended(client: socket.socket) -> bool:
    """True once the server side has been shut down: the client reads the end of the stream."""
    client.settimeout(0.5)
    try:
        return client.recv(100) == b""
    except TimeoutError:
        return False


def closed(doors: Doors, reason: str) -> float:
    return doors.closed.labels(reason)._value.get()


def test_at_the_limit_the_longest_waiting_is_closed_and_busy_ones_never(pairs):
    doors = Doors(3, 60, Metrics())
    (busy, busy_client), (old, old_client), (new, new_client), (extra, _) = [pairs() for _ in range(4)]
    for sock in (busy, old, new):
        assert doors.opened(sock)
    assert doors.busy(busy)  # its headers are in: it is being served
    assert doors.opened(extra)  # full: makes room
    assert ended(old_client) and not ended(busy_client) and not ended(new_client)
    assert not doors.busy(old), "a connection closed to make room is not served"
    assert len(doors) == 3 and closed(doors, "evicted") == 1


def test_when_all_are_busy_a_new_connection_is_refused(pairs):
    doors = Doors(2, 60, Metrics())
    socks = [pairs() for _ in range(3)]
    for server, _ in socks[:2]:
        assert doors.opened(server) and doors.busy(server)
    server, client = socks[2]
    assert not doors.opened(server)
    doors.refuse(server)
    assert client.recv(4096).startswith(b"HTTP/1.1 503 Service Unavailable")
    assert closed(doors, "refused") == 1 and len(doors) == 2
    doors.closing(socks[0][0])
    assert doors.opened(server), "a place is free again"


def test_expire_closes_only_those_waiting_longer_than_the_timeout(pairs):
    doors = Doors(10, 0.5, Metrics())
    (late, late_client), (served, served_client), (idle, idle_client) = [pairs() for _ in range(3)]
    doors.opened(late)
    doors.opened(served)
    doors.busy(served)
    time.sleep(0.6)
    doors.opened(idle)
    assert doors.expire() == 1
    doors.waiting(served)  # its response is sent: keep-alive, the clock starts again
    assert doors.expire() == 0
    assert ended(late_client) and not ended(served_client) and not ended(idle_client)
    assert closed(doors, "header_timeout") == 1
