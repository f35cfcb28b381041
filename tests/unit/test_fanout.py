"""Fan-out to browsers: batches in seq order, encoded once, bounded per browser, drops counted and told."""

import json
import sys
import threading
import time

from numcast_worker.fanout import Fanout


class Socket:
    """Stands for a browser's Engine.IO socket: records the packets handed to it; `busy` keeps its queue full."""

    def __init__(self):
        self.packets = []
        self.busy = False
        self.closed = False
        self.queue = self

    def qsize(self):
        return 1 if self.busy else 0

    def send(self, pkt):
        self.packets.append(pkt)

    def events(self, event):
        found = []
        for pkt in self.packets:
            assert pkt.encode().startswith("42["), "an encoded Socket.IO EVENT"
            name, data = json.loads(pkt.encode()[2:])
            if name == event:
                found.append(data)
        return found


class Fanout_(Fanout):
    """A Fanout whose browsers are Socket objects the test holds."""

    def __init__(self, *args, **kwargs):
        super().__init__(None, *args, **kwargs)
        self.sockets = {}

    def _socket(self, sid):
        return self.sockets.setdefault(sid, Socket())


def envelope(seq):
    return {"seq": seq, "value": 0.0, "ts": 1.0, "source": "a"}


def test_each_browser_gets_what_came_after_it_connected_in_one_batch():
    fanout = Fanout_(limit=100, interval=0.05)
    fanout.push(envelope(1))
    fanout.connect("a")
    for seq in (3, 2, 4):
        fanout.push(envelope(seq))
    fanout.flush()
    a = fanout.sockets["a"]
    assert [[e["seq"] for e in batch] for batch in a.events("numbers")] == [[2, 3, 4]]
    assert a.events("numbers")[0][0] == envelope(2), "the envelope as pushed"
    fanout.flush()
    assert len(a.events("numbers")) == 1, "nothing new, nothing sent"


def test_browsers_at_the_same_cursor_share_one_encoded_packet():
    fanout = Fanout_(limit=100, interval=0.05)
    for sid in ("a", "b", "c"):
        fanout.connect(sid)
    fanout.push(envelope(1))
    fanout.flush()
    packets = [fanout.sockets[sid].packets[-1] for sid in ("a", "b", "c")]
    assert packets[0] is packets[1] is packets[2], "one packet, encoded once, handed to every socket"
    assert packets[0].encode_cache == '42["numbers",[{"seq":1,"value":0.0,"ts":1.0,"source":"a"}]]'


def test_a_busy_browser_waits_and_then_gets_one_batch():
    fanout = Fanout_(limit=100, interval=0.05)
    fanout.connect("slow")
    fanout.connect("fast")
    fanout.sockets["slow"].busy = True
    for seq in range(1, 11):
        fanout.push(envelope(seq))
        assert fanout.flush() is True, "a browser was skipped: look again soon"
    assert len(fanout.sockets["fast"].events("numbers")) == 10
    assert fanout.sockets["slow"].events("numbers") == []
    fanout.sockets["slow"].busy = False
    fanout.push(envelope(11))
    assert fanout.flush() is False
    assert [e["seq"] for e in fanout.sockets["slow"].events("numbers")[0]] == list(range(1, 12))
    assert fanout.sockets["fast"].events("numbers")[-1] == [envelope(11)], "one frame per cursor in a round"


def test_a_stalled_browser_costs_at_most_the_ring_and_its_losses_are_counted_and_told():
    fanout = Fanout_(limit=50, interval=0.05)
    fanout.connect("stalled")
    fanout.sockets["stalled"].busy = True
    for seq in range(1, 1001):
        fanout.push(envelope(seq))
        if seq % 10 == 0:
            fanout.flush()
    assert len(fanout._ring[1]) <= 100
    assert fanout.dropped == 950, "counted while it is stalled, not only once it catches up"
    fanout.sockets["stalled"].busy = False
    fanout.flush()
    assert fanout.sockets["stalled"].events("dropped") == [{"count": 950}]
    assert [e["seq"] for e in fanout.sockets["stalled"].events("numbers")[0]] == list(range(951, 1001))


def test_states_go_on_connect_and_after_each_change_newest_only_and_disconnect_forgets():
    status = {"n": 0}
    fanout = Fanout_(limit=10, interval=0.05, states={"status": lambda: dict(status)})
    fanout.connect("a")
    fanout.flush()
    fanout.flush()
    a = fanout.sockets["a"]
    assert a.events("status") == [{"n": 0}], "once on connect, not again until it changes"
    a.busy = True
    for n in (1, 2, 3):
        status["n"] = n
        fanout.mark("status")
        fanout.flush()
    a.busy = False
    fanout.flush()
    assert a.events("status") == [{"n": 0}, {"n": 3}], "a busy browser gets only the newest"
    fanout.states["alerts"] = lambda: ["disk"]  # a state registered later goes to those who connect later
    fanout.connect("b")
    fanout.flush()
    assert fanout.sockets["b"].events("alerts") == [["disk"]] and a.events("alerts") == []
    fanout.mark("alerts")
    fanout.flush()
    assert a.events("alerts") == [["disk"]] and a.events("status") == [{"n": 0}, {"n": 3}]
    assert fanout.clients == 2
    fanout.disconnect("a")
    assert fanout.clients == 1


def test_a_lone_value_goes_at_once_not_at_the_next_tick():
    fanout = Fanout_(limit=100, interval=2.0)  # a tick this long would show
    fanout.connect("a")
    runner = threading.Thread(target=fanout.run)
    runner.start()
    try:
        time.sleep(0.1)  # the round for the connect (its states) is over: the worker is idle
        pushed = time.monotonic()
        fanout.push(envelope(1))
        while not fanout.sockets["a"].events("numbers") and time.monotonic() - pushed < 2.0:
            time.sleep(0.002)
        waited = time.monotonic() - pushed
        assert fanout.sockets["a"].events("numbers") == [[envelope(1)]]
        assert waited < 0.5, f"sent after {waited:.3f}s: it waited for a tick"
    finally:
        fanout.stopping.set()
        runner.join(5)
    assert not runner.is_alive()


def test_push_during_flush_in_threads_loses_and_repeats_nothing():
    """Threading mode: the ingest threads push while the fan-out thread flushes; every browser gets each once."""
    fanout = Fanout_(limit=10_000, interval=0.05)  # trimmed several times while the flusher reads it
    for sid in ("a", "b"):
        fanout.connect(sid)
    done = threading.Event()
    deadline = time.monotonic() + 30

    def flusher():
        while not done.is_set():
            fanout.flush()
        fanout.flush()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the GIL changes hands between nearly any two bytecodes: races show
    try:
        runner = threading.Thread(target=flusher)
        runner.start()
        for seq in range(1, 50_001):
            fanout.push(envelope(seq))
            if seq % 500 == 0:
                time.sleep(0.001)  # lets the flusher in
            while seq - min(b.cursor for b in fanout._browsers.values()) > 5_000 and runner.is_alive():
                assert time.monotonic() < deadline, "the flusher stopped moving"
                time.sleep(0.001)  # the flusher stays within the ring, whatever the machine's load
    finally:
        done.set()
        runner.join(30)
        sys.setswitchinterval(switch)
    assert fanout.dropped == 0, "the flusher kept within the ring"
    for sid in ("a", "b"):
        seqs = [e["seq"] for batch in fanout.sockets[sid].events("numbers") for e in batch]
        assert seqs == list(range(1, 50_001))


def test_the_socket_is_found_in_python_engineio_itself():
    """Fanout hands packets to each browser's Engine.IO socket and reads its queue: an upgrade that moves them fails."""
    import socketio
    from engineio.socket import Socket as EioSocket

    class App:
        server = socketio.Server(async_mode="threading")

    fanout = Fanout(App, limit=10, interval=0.05)
    eio_socket = EioSocket(App.server.eio, "eio-1")
    App.server.eio.sockets["eio-1"] = eio_socket
    sid = App.server.manager.connect("eio-1", "/")
    fanout.connect(sid)
    fanout.push(envelope(1))
    assert fanout.flush() is False
    assert eio_socket.queue.qsize() == 1, "the batch waits in the socket's own queue"
    fanout.push(envelope(2))
    assert fanout.flush() is True, "the previous batch has not left: skipped"
    assert eio_socket.queue.get().encode() == '42["numbers",[{"seq":1,"value":0.0,"ts":1.0,"source":"a"}]]'
