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


def pushed(seq, series, **labels):
    return {"seq": seq, "value": 0.0, "ts": 1.0, "source": "p", "series": series, "labels": labels}


def test_each_browser_gets_its_subscription_only_and_browsers_that_share_one_share_the_packet():
    from numcast.matchers import from_json
    from numcast_worker.subscriptions import Subscription

    fanout = Fanout_(limit=100, interval=0.05)
    for sid in ("a1", "a2", "b", "plain"):
        fanout.connect(sid)
    fanout.subscribe("a1", Subscription(("q", "t")))
    fanout.subscribe("a2", Subscription(("t", "q")))  # the same set, in another order
    fanout.subscribe("b", Subscription(("q",), from_json(["job=~x.*"])))
    assert len(fanout.subscriptions) == 3
    fanout.push(pushed(3, "q", job="y"))
    fanout.push(envelope(1))
    fanout.push(pushed(2, "t"))
    fanout.push(pushed(4, "q", job="xa"))
    fanout.flush()
    seqs = {
        sid: [[e["seq"] for e in batch] for batch in fanout.sockets[sid].events("numbers")] for sid in fanout.sockets
    }
    assert seqs == {"a1": [[2, 3, 4]], "a2": [[2, 3, 4]], "b": [[4]], "plain": [[1]]}
    assert fanout.sockets["a1"].packets[-1] is fanout.sockets["a2"].packets[-1], "one packet for the subscription"
    assert fanout.encoded == 3
    fanout.push(pushed(5, "t"))
    fanout.flush()
    assert fanout.sockets["b"].events("numbers") == [[pushed(4, "q", job="xa")]], "nothing for b: no frame at all"
    assert fanout.encoded == 4


def test_a_browser_behind_the_others_gets_its_envelopes_from_where_it_was():
    from numcast_worker.subscriptions import Subscription

    fanout = Fanout_(limit=100, interval=0.05)
    for sid in ("fast", "slow"):
        fanout.connect(sid)
        fanout.subscribe(sid, Subscription(("q",)))
    fanout.sockets["slow"].busy = True
    for seq in range(1, 7):
        fanout.push(pushed(seq, "q" if seq % 2 else "t"))
        fanout.flush()
    fanout.sockets["slow"].busy = False
    fanout.push(pushed(7, "q"))
    fanout.flush()  # the index now reaches back to where the slow one was
    assert [[e["seq"] for e in b] for b in fanout.sockets["slow"].events("numbers")] == [[1, 3, 5, 7]]
    assert [[e["seq"] for e in b] for b in fanout.sockets["fast"].events("numbers")] == [[1], [3], [5], [7]]


def test_subscribing_again_releases_the_old_subscription_and_disconnecting_the_last_one():
    from numcast_worker.subscriptions import Subscription

    fanout = Fanout_(limit=10, interval=0.05)
    fanout.connect("a")
    fanout.subscribe("a", Subscription(("q",)))
    fanout.subscribe("a", Subscription(("t",)))
    assert [s.names for s in fanout.subscriptions._held.values()] == [("numcast_value",), ("t",)]
    fanout.disconnect("a")
    assert len(fanout.subscriptions) == 1, "only the default one"
