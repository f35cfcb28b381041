"""The mirror's door: loopback unless told otherwise, idle connections closed, and a full door still serves."""

import contextlib
import socket
import time

import pytest
from conftest import envelope, eventually, http, mirror

from numcast.mirror_key import GREETING, new_key

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


# --- The key: only the control-plane's lines count --------------------------------------------------------------


@pytest.fixture(scope="module")
def fed_worker(module_redis, module_services):
    """A worker fed by a real control-plane through Redis (50 Hz), for the attacks on its mirror."""
    worker = module_services("worker", module_redis.url, wait="/readyz")
    control = module_services("control", module_redis.url, RATE_HZ="50", wait="/readyz")
    eventually(lambda: len(history(worker)) >= 3, message="the real values flow")
    return worker, control


def other_key(tmp_path) -> str:
    path = tmp_path / "other.key"
    path.write_text(new_key() + "\n")
    return str(path)


def forged(worker, how: str, tmp_path, lines: list[bytes]) -> socket.socket:
    """A connection that sends `lines` as an attacker can: unsigned, signed with another key, or replayed/moved."""
    if how == "unsigned":
        conn = connect(worker)
        conn.sendall(b"".join(line + b"\n" for line in lines))
        return conn
    if how == "other key":
        conn = mirror(worker, other_key(tmp_path))
        conn.send(lines)
        return conn.sock
    # Lines really signed with the key, on the connection they were signed for; then sent again elsewhere.
    genuine = mirror(worker)
    signed = genuine.sign(lines).splitlines(keepends=True)
    genuine.close()
    conn = connect(worker)
    if how == "replayed":  # on a new connection: another challenge
        conn.sendall(b"".join(signed))
        return conn
    # reordered: on the connection they were signed for, the second line first
    conn.close()
    thief = mirror(worker)
    signed = thief.sign(lines).splitlines(keepends=True)
    thief.sock.sendall(signed[1] + signed[0])
    return thief.sock


@pytest.mark.parametrize("how", ["unsigned", "other key", "replayed", "reordered"])
def test_lines_without_a_valid_mac_are_refused_counted_and_the_connection_closed(fed_worker, tmp_path, how):
    """The attack: read the running source and last seq from /api/history, send the next seqs with value 666."""
    worker, _ = fed_worker
    last = worker.json("/api/history")["envelopes"][-1]
    fakes = [envelope(last["seq"] + n, value=666.0, source=last["source"]).encode() for n in range(1, 1001)]
    closed = worker.metric("numcast_tcp_closed_total", 'reason="bad_mac"')
    accepted = worker.metric("numcast_accepted_total", 'path="tcp"')
    conn = forged(worker, how, tmp_path, fakes[:2] if how == "reordered" else fakes)
    assert closed_by_peer(conn)
    conn.close()
    assert worker.metric("numcast_tcp_closed_total", 'reason="bad_mac"') == closed + 1
    assert worker.metric("numcast_accepted_total", 'path="tcp"') == accepted, "not one line taken"
    eventually(lambda: history(worker)[-1] > last["seq"] + 10, message="the real values go on")
    envelopes = worker.json("/api/history")["envelopes"]
    assert 666.0 not in [e["value"] for e in envelopes]
    seqs = [e["seq"] for e in envelopes]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the real values for those seqs, none dropped"
    assert "reason=bad_mac" in worker.logs()


def test_a_replayed_line_fails_on_the_connection_it_was_signed_for_too(fed_worker):
    worker, _ = fed_worker
    closed = worker.metric("numcast_tcp_closed_total", 'reason="bad_mac"')
    conn = mirror(worker)
    first = conn.sign([envelope(1, source="replay-1").encode()])
    conn.sock.sendall(first)
    eventually(lambda: ("replay-1", 1) in [(e["source"], e["seq"]) for e in worker.json("/api/history")["envelopes"]])
    conn.sock.sendall(first)  # the same bytes again: its counter is now 1, not 0
    assert closed_by_peer(conn.sock)
    assert worker.metric("numcast_tcp_closed_total", 'reason="bad_mac"') == closed + 1
    conn.close()


def test_without_a_key_file_the_worker_says_so_and_its_mirror_port_does_not_listen(redis_server, services):
    worker = services("worker", redis_server.url, MIRROR_KEY_FILE="")
    with pytest.raises(ConnectionRefusedError):
        connect(worker)
    assert "tcp mirror off: MIRROR_KEY_FILE is not set" in worker.logs()
    assert worker.json("/api/status")["tcp"]["on"] is False


def test_the_key_is_rotated_without_losing_a_value(redis_server, services, tmp_path):
    """The documented steps, on a mirror that alone carries the values: add the new key, sign with it, drop the old."""
    key_file = tmp_path / "rotating.key"
    old, new = new_key(), new_key()
    key_file.write_text(old + "\n")
    worker = services("worker", redis_server.url, wait="/readyz", MIRROR_KEY_FILE=str(key_file))
    nowhere = "redis://127.0.0.1:1/0"
    control = services(
        "control", nowhere, RATE_HZ="100", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}",
        MIRROR_KEY_FILE=str(key_file),
    )  # fmt: skip
    eventually(lambda: len(history(worker)) >= 10, message="the mirror is served")
    for step, keys in enumerate(([old, new], [new, old], [new]), 1):
        key_file.write_text("\n".join(keys) + "\n")
        # As the documented steps do: the next step once both ends have read this one (each looks once a second).
        for service in (worker, control):
            eventually(lambda s=service, n=step: s.logs().count("mirror key file changed") == n, message=f"{keys}")
        served = len(history(worker))
        eventually(lambda s=served: len(history(worker)) >= s + 10, message=f"served with keys {keys}")
    seqs = history(worker)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no value lost"
    assert worker.metric("numcast_tcp_closed_total", 'reason="bad_mac"') == 0
    assert worker.metric("numcast_tcp_connections") == 1, "the same connection all along"


def test_heartbeating_strangers_do_not_shut_out_a_restarted_control_plane(redis_server, services):
    """16 connections that send a valid envelope and then a heartbeat every 0.3 s, as a control-plane does."""
    worker = services("worker", redis_server.url, wait="/readyz")
    strangers = [connect(worker) for _ in range(16)]  # MAX_TCP_CLIENTS, the default
    for n, conn in enumerate(strangers):
        conn.sendall((envelope(1, source=f"stranger-{n}") + "\n").encode())
    for _ in range(3):
        for conn in strangers:
            with contextlib.suppress(OSError):
                conn.sendall(b"\n")
        time.sleep(0.3)
    nowhere = "redis://127.0.0.1:1/0"
    services("control", nowhere, RATE_HZ="20", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}")
    eventually(lambda: worker.metric("numcast_accepted_total", 'path="tcp"') >= 10, message="the control-plane is in")
    assert worker.metric("numcast_tcp_closed_total", 'reason="refused"') == 0
    assert worker.metric("numcast_tcp_closed_total", 'reason="bad_mac"') == 16
    assert not [e for e in worker.json("/api/history")["envelopes"] if e["source"].startswith("stranger-")]
    for conn in strangers:
        conn.close()
