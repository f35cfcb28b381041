"""The subscriber against a real Redis whose replies reach it in pieces, as they do over a busy network: a reply
it has begun is waited for, never taken for a dead connection (and what was published meanwhile lost)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import envelope, eventually, publish

from numcast.local import free_port
from numcast.push import stream
from numcast.subscriber import Subscriber


class SlowLink:
    """A TCP proxy to a real Redis that passes what Redis sends in pieces of at most `piece` bytes, `pause` s apart."""

    def __init__(self, port: int, piece: int, pause: float) -> None:
        self.target, self.piece, self.pause = ("127.0.0.1", port), piece, pause
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.pieces = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(65536):
                while slow and len(data) > self.piece:
                    target.sendall(data[: self.piece])
                    data = data[self.piece :]
                    self.pieces += 1
                    time.sleep(self.pause)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture
def subscribe(redis_server):
    """subscribe(channel, piece, pause): a Subscriber through a SlowLink; (messages it got, subscriptions, link)."""
    running = []

    def start(channel: str, piece: int, pause: float):
        link = SlowLink(redis_server.port, piece, pause)
        got: list[bytes] = []
        subscriptions: list[bool] = []
        subscriber = Subscriber(
            f"redis://127.0.0.1:{link.port}/0", {channel: got.extend}, on_subscribed=subscriptions.append
        )
        thread = threading.Thread(target=subscriber.run, daemon=True)
        thread.start()
        running.append((subscriber, thread, link))
        eventually(lambda: subscriber.subscribed, message="subscribed through the slow link")
        return got, subscriptions, link

    yield start
    for subscriber, thread, link in running:
        subscriber.stop()
        thread.join(5)
        link.close()


def test_a_message_whose_second_half_comes_after_the_poll_is_waited_for(redis_server, subscribe):
    # Half a message, then 0.5 s: longer than the subscriber's 0.2 s poll, so the rest comes in another read.
    got, subscriptions, link = subscribe("numbers", piece=64, pause=0.5)
    sent = [envelope(seq).encode() for seq in range(1, 6)]
    publish(redis_server, *sent)
    eventually(lambda: len(got) == len(sent), timeout=20, message="every message, each waited for whole")
    assert got == sent
    assert link.pieces >= len(sent), "each came in more than one piece"
    assert subscriptions == [False], "subscribed once: never taken for a lost connection"


def test_a_large_push_message_that_arrives_in_many_pieces_is_read_whole(redis_server, subscribe):
    # A message of the push channel is hundreds of envelopes, which Redis writes in steps (64 KiB per turn of its
    # loop) and a busy network delivers in pieces: here 16 KiB, 20 ms apart.
    got, subscriptions, _ = subscribe("numbers:push", piece=16384, pause=0.02)
    line = '{"seq":1,"value":1.0,"ts":1.0,"source":"p.push","series":"s","labels":{"n":"' + "x" * 200 + '"}}'
    (message,) = stream.frame([line] * stream.MAX_LINES)  # about 150 KB: ten pieces
    client = redis_server.client()
    for _ in range(5):
        client.publish("numbers:push", message)
    client.close()
    eventually(lambda: len(got) == 5, timeout=30, message="five whole messages")
    assert all(data == message.encode() for data in got)
    assert subscriptions == [False], "subscribed once: never lost on the way"
