"""The subscriber against a real Redis whose replies reach it in pieces, as they do over a busy network."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import envelope, eventually, publish

from numcast.subscriber import Subscriber

SPLIT_DELAY = 0.5  # between the two halves of each piece: longer than the subscriber's 0.2 s poll


class SplittingProxy:
    """Forwards one client to Redis; every piece Redis sends is cut in two, the second half sent late.

    A message then arrives in two reads with a pause between them, as it may when the network or the receiving
    host is loaded: the subscriber must wait for the rest of a message it has begun, not take the pause as a
    dead connection.
    """

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.splits = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, split: bool) -> None:
        try:
            while data := source.recv(65536):
                if split and len(data) > 1:
                    half = len(data) // 2
                    target.sendall(data[:half])
                    self.splits += 1
                    time.sleep(SPLIT_DELAY)
                    data = data[half:]
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture
def proxy(redis_server):
    splitting = SplittingProxy(redis_server.port)
    yield splitting
    splitting.close()


def test_a_message_that_arrives_in_two_reads_is_waited_for_not_taken_for_a_dead_connection(redis_server, proxy):
    received: list[bytes] = []
    subscriber = Subscriber(f"redis://127.0.0.1:{proxy.port}/0", {"numbers": received.extend})
    thread = threading.Thread(target=subscriber.run, daemon=True)
    thread.start()
    try:
        eventually(lambda: subscriber.subscribed, message="subscribed through the proxy")
        sent = [envelope(seq).encode() for seq in range(1, 6)]
        for message in sent:
            publish(redis_server, message)
        eventually(lambda: len(received) == len(sent), timeout=15, message="every message, each waited for whole")
        assert received == sent
        assert proxy.splits >= len(sent), "each came in two pieces"
        assert subscriber.subscribed and not subscriber._lost, "never taken for a lost connection"
    finally:
        subscriber.stop()
        thread.join(5)
