"""Fan-out to browsers: batches in seq order, bounded per browser, drops counted and told."""

from numcast_worker.fanout import Fanout


class Emitter:
    """Records what would be sent to each browser."""

    def __init__(self):
        self.sent = []

    def emit(self, event, data, to):
        self.sent.append((to, event, data))

    def events(self, sid, event):
        return [data for to, name, data in self.sent if to == sid and name == event]


class Fanout_(Fanout):
    """A Fanout whose browsers' send queues the test fills and empties."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.busy = set()

    def _backlog(self, sid):
        return 1 if sid in self.busy else 0


def envelope(seq):
    return {"seq": seq, "value": 0.0, "ts": 1.0, "source": "a"}


def test_each_browser_gets_what_came_after_it_connected_in_one_batch():
    socketio = Emitter()
    fanout = Fanout_(socketio, limit=100, interval=0.05)
    fanout.push(envelope(1))
    fanout.connect("a")
    for seq in (3, 2, 4):
        fanout.push(envelope(seq))
    fanout.flush()
    assert [[e["seq"] for e in batch] for batch in socketio.events("a", "numbers")] == [[2, 3, 4]]
    fanout.flush()
    assert len(socketio.events("a", "numbers")) == 1, "nothing new, nothing sent"


def test_a_busy_browser_waits_and_then_gets_one_batch():
    socketio = Emitter()
    fanout = Fanout_(socketio, limit=100, interval=0.05)
    fanout.connect("slow")
    fanout.connect("fast")
    fanout.busy.add("slow")
    for seq in range(1, 11):
        fanout.push(envelope(seq))
        fanout.flush()
    assert len(socketio.events("fast", "numbers")) == 10
    assert socketio.events("slow", "numbers") == []
    fanout.busy.clear()
    fanout.flush()
    assert [e["seq"] for e in socketio.events("slow", "numbers")[0]] == list(range(1, 11))


def test_a_stalled_browser_costs_at_most_the_ring_and_its_losses_are_counted_and_told():
    socketio = Emitter()
    fanout = Fanout_(socketio, limit=50, interval=0.05)
    fanout.connect("stalled")
    fanout.busy.add("stalled")
    for seq in range(1, 1001):
        fanout.push(envelope(seq))
        if seq % 10 == 0:
            fanout.flush()
    assert len(fanout._ring) <= 100
    assert fanout.dropped == 950, "counted while it is stalled, not only once it catches up"
    fanout.busy.clear()
    fanout.flush()
    assert socketio.events("stalled", "dropped") == [{"count": 950}]
    assert [e["seq"] for e in socketio.events("stalled", "numbers")[0]] == list(range(951, 1001))


def test_states_go_on_connect_and_after_each_change_newest_only_and_disconnect_forgets():
    socketio = Emitter()
    status = {"n": 0}
    fanout = Fanout_(socketio, limit=10, interval=0.05, states={"status": lambda: dict(status)})
    fanout.connect("a")
    fanout.flush()
    fanout.flush()
    assert socketio.events("a", "status") == [{"n": 0}], "once on connect, not again until it changes"
    fanout.busy.add("a")
    for n in (1, 2, 3):
        status["n"] = n
        fanout.mark("status")
        fanout.flush()
    fanout.busy.clear()
    fanout.flush()
    assert socketio.events("a", "status") == [{"n": 0}, {"n": 3}], "a busy browser gets only the newest"
    assert fanout.clients == 1
    fanout.disconnect("a")
    assert fanout.clients == 0


def test_the_backlog_is_read_from_python_engineio_itself():
    """Fanout reads each browser's Engine.IO send queue; if an upgrade moved it, this fails, not the bound."""
    import socketio
    from engineio.socket import Socket

    class App:
        server = socketio.Server(async_mode="threading")

    fanout = Fanout(App, limit=10, interval=0.05)
    eio_socket = Socket(App.server.eio, "eio-1")
    App.server.eio.sockets["eio-1"] = eio_socket
    sid = App.server.manager.connect("eio-1", "/")
    assert fanout._backlog(sid) == 0
    eio_socket.queue.put("a packet on its way")
    assert fanout._backlog(sid) == 1
    assert fanout._backlog("no such browser") == 0
