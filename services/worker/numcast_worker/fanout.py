"""Fan-out to browsers: one shared ring of recent envelopes, a cursor per browser, rounds that adapt to the load.

python-socketio's emit queues without limit for a client that stopped reading, and encodes its packet once
per client. Here a browser gets a new batch only when its previous one has left the server (its Engine.IO
queue, or the bytes of a direct write the kernel had not taken), so each costs at most two batches of memory;
a browser that falls more than the ring's length behind loses the oldest values, counted and told. Each browser
watches a subscription (the series it named, and label matchers; the generator's series until it names others).
Each round encodes every new envelope once and builds one frame per distinct subscription and cursor (nearly
every browser of a subscription shares one), from an index of the round's envelopes by series name: under
eventlet it writes those same WebSocket frame bytes to each browser's socket itself (`direct`), in threading
mode it queues the same encoded packet on each browser's Engine.IO socket.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping

from engineio import packet as eio_packet
from engineio.exceptions import SocketIsClosedError

from numcast.envelope import GENERATOR_SERIES
from numcast_worker import direct
from numcast_worker.subscriptions import Subscription, Subscriptions

log = logging.getLogger(__name__)

# A round's cost (CPU of the process since the previous round began) times this is the earliest the next
# round may start: rounds then take at most about 1/(1 + HOLD_FACTOR) of a core, however many browsers there
# are, as long as the hold stays under `interval` (BATCH_MS). An idle worker has spent nearly nothing since its
# last round, so a value that comes alone goes at once. 6, not 4, since rounds write frames directly: a round
# costs a quarter of what it did, and at 4 the saving went into more rounds of fewer values (1.6 values per
# frame, 5.3 µs of CPU per delivery at 500 browsers) rather than into CPU; at 6, 3 values per frame, 4 µs.
HOLD_FACTOR = 6
IDLE_WAIT = 0.25  # with nothing pushed, look again this often
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # python-socketio's own encoding of a payload


class Browser:
    """One connected browser: where it is in the ring, its Engine.IO socket, and its WebSocket once written to."""

    __slots__ = ("cursor", "missed", "pending", "seen", "socket", "subscription", "ws")

    def __init__(self, cursor: int, socket, subscription: Subscription) -> None:
        self.cursor = cursor  # index of the next envelope it gets (or skips, if it is not of its subscription)
        self.subscription = subscription
        self.seen = 0  # it has every state changed up to this version
        self.missed = 0  # values dropped for it and not yet told to it
        self.socket = socket
        self.ws = None  # its eventlet WebSocket (direct writes); False: never, engineio's queue carries it
        self.pending = b""  # bytes of a direct write the kernel has not taken yet: at most one round's


class Message:
    """A Socket.IO event encoded once: an Engine.IO packet for engineio's queue, framed for a direct write."""

    __slots__ = ("_frame", "packet")

    def __init__(self, event: str, payload: str) -> None:
        self.packet = _packet(event, payload)
        self._frame = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = direct.frame(self.packet.encode())
        return self._frame


class Fanout:
    """Pushes envelopes as `numbers` events (a JSON array in seq order) to every connected browser.

    Besides the stream, each browser gets the latest value of every named state (`status`, `alerts`...): on
    connect, and after `mark(event)` says it changed. A browser that is behind gets only the newest value once.

    Thread safety (threading mode): `push` is called by one thread at a time (Ingest holds its lock) and only
    appends, or swaps in a trimmed copy; `flush` reads `(base, ring)` in one step and only the part below the
    length it saw, so a push during a flush is simply left for the next round.
    """

    def __init__(
        self,
        socketio,
        limit: int,
        interval: float,
        states: Mapping[str, Callable[[], object]] | None = None,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        self.socketio, self.interval = socketio, interval  # interval: the longest a round is held back
        self.states = dict(states or {})  # event -> what it sends, read when it is sent
        self.subscriptions = subscriptions if subscriptions is not None else Subscriptions(1000)
        self._limit = limit
        # (index of ring[0], ring): one tuple, so a reader never sees one without the other. The ring holds
        # envelopes as pushed; a round replaces each by (seq, its JSON) the first time it sends it.
        self._ring: tuple[int, list] = (0, [])
        self._browsers: dict[str, Browser] = {}
        self._version = 1  # of the states: a browser with `seen` below it has a state to get
        self._changed: dict[str, int] = {}  # state -> version of its last change (1 if never marked)
        self._lock = threading.Lock()  # for mark's two fields and the subscriptions; push never takes it
        self._trim_at, self._hurry_at = 2 * limit, limit // 2
        self._woken = False  # set with _wake by push, cleared by run before it reads the ring
        self._wake = threading.Event()
        self._urgent = threading.Event()  # half the ring is waiting to go: end a round's hold early
        self._sent = 0  # ring index where the last round ended
        self._websockets: direct.WebSockets | None = None  # set by write_directly: under eventlet only
        self.dropped = 0
        self.rounds = 0
        self.encoded = 0  # `numbers` frames built: one per distinct subscription and cursor per round
        self.stopping = threading.Event()

    def write_directly(self) -> None:
        """Under eventlet, write frames to each browser's WebSocket from the rounds (`direct`); call before serving."""
        if self.socketio.async_mode == "eventlet":
            self._websockets = direct.WebSockets()
            self._websockets.install(self.socketio.server.eio)

    @property
    def clients(self) -> int:
        """Browsers connected now."""
        return len(self._browsers)

    def push(self, envelope: dict) -> None:
        """Queue one envelope for every browser."""
        base, ring = self._ring
        ring.append(envelope)
        if len(ring) > self._trim_at:  # trim in steps: amortised O(1), never above 2 x limit
            cut = len(ring) - self._limit
            self._ring = (base + cut, ring[cut:])  # a new list: a flush in progress keeps its snapshot
        if not self._woken:  # a plain flag: the hot path of ingest pays for no Event call
            self._woken = True
            self._wake.set()
        elif base + len(ring) - self._sent > self._hurry_at and not self._urgent.is_set():
            self._urgent.set()  # a hold must never let browsers that keep up fall off the ring

    def connect(self, sid: str) -> None:
        """Start sending `sid` what arrives from now on; the page backfills the past from /api/history."""
        base, ring = self._ring
        with self._lock:
            subscription = self.subscriptions.acquire(self.subscriptions.default)
        self._browsers[sid] = Browser(base + len(ring), self._socket(sid), subscription)
        self._wake.set()  # its states go at once

    def disconnect(self, sid: str) -> None:
        """Forget `sid`."""
        browser = self._browsers.pop(sid, None)
        if browser is not None:
            with self._lock:
                self.subscriptions.release(browser.subscription)

    def subscribe(self, sid: str, wanted: Subscription) -> Subscription:
        """From its next batch on, send `sid` only envelopes of `wanted`; raise SubscribeError when it cannot be held.

        What was queued for it and not yet sent goes by the new subscription: nothing it asked for is skipped.
        """
        with self._lock:
            held = self.subscriptions.acquire(wanted)
            browser = self._browsers.get(sid)
            if browser is None:  # gone meanwhile
                self.subscriptions.release(held)
                return held
            previous, browser.subscription = browser.subscription, held
            self.subscriptions.release(previous)
        return held

    def mark(self, event: str) -> None:
        """State `event` changed: every browser gets its new value with its next batch."""
        with self._lock:
            self._version += 1
            self._changed[event] = self._version
        self._wake.set()

    def stop(self) -> None:
        """Ask `run()` to return, waking it now."""
        self.stopping.set()
        self._urgent.set()
        self._wake.set()

    def run(self) -> None:
        """Send rounds until stopped: at once after a quiet spell, no sooner than the last round's cost allows."""
        pending, started, cpu = False, 0.0, time.process_time()
        while not self.stopping.is_set():
            # Browsers skipped as busy are looked at again soon; otherwise only a push or a mark wakes us.
            self._wake.wait(self.interval / 4 if pending else IDLE_WAIT)
            hold = min(self.interval, HOLD_FACTOR * (time.process_time() - cpu))
            delay = started + hold - time.monotonic()
            if delay > 0 and self._urgent.wait(delay) and self.stopping.is_set():
                return
            self._woken = False  # before the round reads the ring: a later push wakes the next round
            self._wake.clear()
            self._urgent.clear()
            started, cpu = time.monotonic(), time.process_time()
            pending = self.flush()

    def flush(self) -> bool:
        """One round: send each browser that is keeping up everything it has not had yet.

        Returns True when a browser was skipped because its previous batch is still queued.
        """
        base, ring = self._ring
        end = self._sent = base + len(ring)
        first = max(base, end - self._limit)
        version = self._version
        frames = _Frames(self, ring, base, end)  # (subscription, cursor) -> what every browser there gets
        states: dict[str, Message] = {}  # event -> its message, read and encoded once per round
        websockets = self._websockets
        pending = False
        for sid, browser in list(self._browsers.items()):
            if browser.cursor < first:  # fell more than the ring behind: what it missed is gone, count it now
                missed = first - browser.cursor
                self.dropped += missed
                browser.missed += missed
                browser.cursor = first
            if browser.cursor == end and browser.seen == version and not browser.missed and not browser.pending:
                continue
            socket = browser.socket
            ws = browser.ws
            if ws is None and websockets is not None and websockets.attach(browser):
                ws = browser.ws
            if socket.queue.qsize() or (ws and ws._sendlock.locked()):
                pending = True
                continue  # its previous batch is still on the way: send it more later, in one batch
            try:
                if ws:
                    pending = self._write(browser, socket, ws, ring, base, end, version, frames, states) or pending
                else:
                    for message in self._messages(browser, ring, base, end, version, frames, states):
                        socket.send(message.packet)
            except SocketIsClosedError:  # closed while we sent (a missed pong): its disconnect forgets it
                self._browsers.pop(sid, None)
            except OSError as exc:  # the connection is gone (reset, broken pipe): engineio sees it too and closes
                log.info("browser write failed sid=%s error=%r", sid, exc)
                self._browsers.pop(sid, None)
        self.rounds += 1
        return pending

    def _write(self, browser, socket, ws, ring, base, end, version, frames, states) -> bool:
        """Write `browser` what it lacks, framed, to its socket without blocking; True if part of it must wait.

        Bytes the kernel left from an earlier round go first; while some are left, it gets nothing new.
        """
        if not socket.check_ping_timeout():  # what engineio's send does first: a missed pong closes it
            return False
        with ws._sendlock:  # free (checked by the caller): taken without a switch
            if browser.pending:
                direct.write(browser, b"")
                if browser.pending:
                    return True
            messages = self._messages(browser, ring, base, end, version, frames, states)
            if messages:
                direct.write(browser, b"".join([message.frame for message in messages]))
        return bool(browser.pending)

    def _messages(self, browser, ring, base, end, version, frames, states) -> list[Message]:
        """What `browser` lacks, in order: a drop notice, the new envelopes, the states changed since it looked."""
        messages = []
        if browser.missed:
            messages.append(Message("dropped", _dumps({"count": browser.missed})))
            browser.missed = 0
        if browser.cursor < end:
            message = frames.get(browser.subscription, browser.cursor)
            if message is not None:  # None: nothing of its subscription came
                messages.append(message)
            browser.cursor = end
        if browser.seen < version:
            for event in list(self.states):
                if self._changed.get(event, 1) > browser.seen:
                    if event not in states:
                        states[event] = Message(event, _dumps(self.states[event]()))
                    messages.append(states[event])
            browser.seen = version
        return messages

    def _socket(self, sid: str):
        """The Engine.IO socket of `sid`: where its packets queue, and where its backlog is read."""
        server = self.socketio.server
        return server.eio.sockets[server.manager.eio_sid_from_sid(sid, "/")]


def _packet(event: str, payload: str):
    """A Socket.IO EVENT as an Engine.IO MESSAGE, encoded now: every socket it is handed to sends these bytes."""
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data=f'2["{event}",{payload}]')
    pkt.encode()  # fills the packet's encode cache, which each socket's writer then uses as it is
    return pkt


class _Frames:
    """One round's `numbers` frames, by subscription and cursor, built from an index of the ring by series name.

    The ring's envelopes are replaced by (seq, JSON, series, labels) the first time a round reaches them, so each
    is encoded once. The index covers the ring from the lowest cursor asked for so far to the round's end: a
    subscription's frame is the positions of its series there, filtered by its matchers, in seq order.
    """

    __slots__ = ("base", "built", "fanout", "index", "low", "ring", "stop")

    def __init__(self, fanout: Fanout, ring: list, base: int, end: int) -> None:
        self.fanout, self.ring, self.base = fanout, ring, base
        self.stop = self.low = end - base  # the index covers ring[low:stop]
        self.index: dict[str, list[int]] = {}  # series name -> positions in the ring, ascending
        self.built: dict[tuple, Message | None] = {}

    def get(self, subscription: Subscription, cursor: int) -> Message | None:
        """The frame for browsers of `subscription` at `cursor`; None when none of its envelopes came since."""
        key = (subscription, cursor)
        try:
            return self.built[key]
        except KeyError:
            message = self.built[key] = self._build(subscription, cursor - self.base)
            return message

    def _build(self, subscription: Subscription, start: int) -> Message | None:
        if start < self.low:
            self._cover(start)
        index, picked = self.index, []
        for name in subscription.names:
            positions = index.get(name)
            if positions:
                picked += positions[bisect_left(positions, start) :] if positions[0] < start else positions
        if not picked:
            return None
        ring = self.ring
        batch = [ring[i] for i in picked]
        if subscription.matchers:
            accepts = subscription.accepts
            batch = [item for item in batch if accepts(item[3])]
            if not batch:
                return None
        batch.sort(key=_seq)
        self.fanout.encoded += 1
        return Message("numbers", "[" + ",".join([item[1] for item in batch]) + "]")

    def _cover(self, start: int) -> None:
        """Encode and index ring[start:low], in front of what the index holds."""
        ring, added = self.ring, {}
        for i in range(start, self.low):
            item = ring[i]
            if type(item) is dict:
                item = ring[i] = (item["seq"], _dumps(item), item.get("series", GENERATOR_SERIES), item.get("labels"))
            positions = added.get(item[2])
            if positions is None:
                added[item[2]] = [i]
            else:
                positions.append(i)
        index = self.index
        for name, positions in added.items():
            later = index.get(name)
            index[name] = positions + later if later else positions
        self.low = start


def _seq(item: tuple) -> int:
    return item[0]
