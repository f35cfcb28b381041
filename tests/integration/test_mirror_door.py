"""The mirror's door: loopback unless told otherwise, idle connections closed, and a full door still serves."""

import socket
import time

import pytest
from conftest import envelope, eventually, http, mirror

from numcast.mirror_key import GREETING

IDLE = 1  # TCP_IDLE_SECONDS for these tests: the smallest allowed, so that idle connections go quickly


def history(worker) -> list[int]:
    return [e["seq"] for e in worker.json("/api/history")["envelopes"]]


def connect(worker) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(worker.env["TCP_PORT"])), timeout=10)


def closed_by_peer(conn: socket.socket) -> bool:
    """True once the worker has closed `conn` (waits up to its timeout); its challenge, if it sent one, is skipped."""
    try:
        while data := conn.recv(4096):
            assert data.startswith(GREETING), f"closed, not answered: {data!r}"
        return True
    except ConnectionResetError:
        return True


def seconds_until_closed(conn: socket.socket, since: float) -> float:
    """Seconds from `since` (time.monotonic()) until the worker closed `conn`; fails if it answered anything else."""
    assert closed_by_peer(conn), "closed, not answered"
    return time.monotonic() - since


def listening_address(port: int) -> str:
    """The local address a socket listening on `port` is bound to, from /proc/net/tcp (hex, as the kernel shows it)."""
    with open("/proc/net/tcp") as table:
        for row in table.read().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                return address
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.parametrize(("tcp_host", "address"), [(None, "0100007F"), ("0.0.0.0", "00000000")])
def test_the_mirror_port_binds_loopback_unless_tcp_host_says_otherwise(redis_server, services, tcp_host, address):
    env = {"TCP_HOST": tcp_host} if tcp_host else {}
    worker = services("worker", redis_server.url, **env)
    assert listening_address(int(worker.env["TCP_PORT"])) == address  # 127.0.0.1, or every address


@pytest.mark.parametrize("sent", [b"", b'{"seq": 1, "va'], ids=["nothing", "half a line"])
def test_a_connection_that_sends_no_complete_line_is_closed(redis_server, services, sent):
    worker = services("worker", redis_server.url, TCP_IDLE_SECONDS=str(IDLE))
    connecting = time.monotonic()  # the worker's clock starts at its accept, after this
    conn = connect(worker)
    conn.sendall(sent)
    # At TCP_IDLE_SECONDS, never before, and long before the 5 s an ignored setting would give.
    assert IDLE <= seconds_until_closed(conn, connecting) < IDLE + 2
    eventually(lambda: worker.metric("numcast_tcp_closed_total", 'reason="idle"') == 1)
    assert worker.metric("numcast_tcp_connections") == 0
    conn.close()


def test_a_connection_that_sends_heartbeats_stays_open(redis_server, services):
    worker = services("worker", redis_server.url, TCP_IDLE_SECONDS=str(IDLE))
    conn = mirror(worker)
    conn.sock.settimeout(0.3)
    for _ in range(8):  # 2.4 s, more than twice TCP_IDLE_SECONDS, with a signed heartbeat line every 0.3 s
        conn.send([b""])
        with pytest.raises(TimeoutError):
            conn.sock.recv(1)  # nothing comes back, and the connection is not closed
    conn.send([envelope(1).encode()])
    eventually(lambda: history(worker) == [1])
    assert worker.metric("numcast_tcp_closed_total", 'reason="idle"') == 0
    conn.close()


def test_idle_connections_do_not_hold_the_door_shut_for_the_control_plane(redis_server, services):
    worker = services("worker", redis_server.url, MAX_TCP_CLIENTS="4", wait="/readyz")
    idle = [connect(worker) for _ in range(20)]  # five times the limit, sending nothing
    eventually(
        lambda: worker.metric("numcast_tcp_closed_total", 'reason="evicted"') == 16,
        message="each newcomer took the slot of the oldest idle connection",
    )
    assert worker.metric("numcast_tcp_connections") == 4
    # The real control-plane, with its values reaching this worker by the mirror alone.
    nowhere = "redis://127.0.0.1:1/0"
    services("control", nowhere, RATE_HZ="20", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}")
    eventually(lambda: len(history(worker)) >= 20, message="the mirror is served")
    assert worker.metric("numcast_accepted_total", 'path="tcp"') >= 20
    more = [connect(worker) for _ in range(20)]  # a newcomer takes the slot of an idle one, never the mirror's
    eventually(lambda: worker.metric("numcast_tcp_closed_total", 'reason="evicted"') >= 36)
    served = len(history(worker))
    eventually(lambda: len(history(worker)) >= served + 20, message="the mirror is still served")
    assert worker.metric("numcast_tcp_closed_total", 'reason="refused"') == 0
    for conn in idle + more:
        conn.close()


def test_when_every_slot_holds_an_authenticated_connection_a_newcomer_is_refused(redis_server, services):
    worker = services("worker", redis_server.url, MAX_TCP_CLIENTS="2")
    first, second = mirror(worker), mirror(worker)
    first.send([envelope(1).encode()])
    eventually(lambda: history(worker) == [1])
    second.send([envelope(2).encode()])
    eventually(lambda: history(worker) == [1, 2])
    third = connect(worker)
    assert closed_by_peer(third)
    assert worker.metric("numcast_tcp_closed_total", 'reason="refused"') == 1
    first.send([envelope(3).encode()])
    eventually(lambda: history(worker) == [1, 2, 3], message="the authenticated connections go on")
    for conn in (first, second):
        conn.close()
    third.close()


def test_a_paused_control_plane_keeps_its_mirror_connection_with_heartbeats(redis_server, services):
    worker = services("worker", redis_server.url, TCP_IDLE_SECONDS=str(IDLE), wait="/readyz")
    control = services(
        "control", redis_server.url, RATE_HZ="20", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}"
    )
    eventually(lambda: worker.metric("numcast_accepted_total", 'path="tcp"') >= 5, message="the mirror is served")
    assert http("PATCH", control.url + "/api/config", {"paused": True})[0] == 200
    time.sleep(3 * IDLE)  # paused: no values, only the control-plane's heartbeat lines
    assert worker.metric("numcast_tcp_closed_total", 'reason="idle"') == 0
    assert worker.metric("numcast_tcp_connections") == 1
    assert control.metric("numcast_publish_errors_total", 'path="tcp"') == 0
