"""A subscriber reads a large message that arrives in parts: a message of the push channel is hundreds of
envelopes, which Redis writes in steps (64 KiB per turn of its loop) and a busy network delivers in pieces."""

from __future__ import annotations

import socket
import threading
import time

from conftest import eventually

from numcast.local import free_port
from numcast.push import stream
from numcast.subscriber import Subscriber


class SlowLink:
    """A TCP proxy to a real Redis that passes what Redis sends in 16 KiB pieces, 20 ms apart."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, 16384), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, piece: int) -> None:
        try:
            while data := source.recv(piece or 65536):
                target.sendall(data)
                if piece and len(data) == piece:
                    time.sleep(0.02)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


def test_a_message_that_arrives_in_pieces_is_read_whole_and_the_subscription_kept(redis_server):
    link = SlowLink(redis_server.port)
    got: list[bytes] = []
    subscriptions: list[bool] = []
    subscriber = Subscriber(
        f"redis://127.0.0.1:{link.port}/0",
        {"numbers:push": got.extend},
        on_subscribed=subscriptions.append,
    )
    thread = threading.Thread(target=subscriber.run, daemon=True)
    thread.start()
    try:
        eventually(lambda: subscriber.subscribed, message="subscribed through the slow link")
        line = '{"seq":1,"value":1.0,"ts":1.0,"source":"p.push","series":"s","labels":{"n":"' + "x" * 200 + '"}}'
        (message,) = stream.frame([line] * stream.MAX_LINES)  # about 150 KB: ten pieces, 200 ms
        client = redis_server.client()
        for _ in range(5):
            client.publish("numbers:push", message)
        eventually(lambda: len(got) == 5, timeout=30, message="five whole messages")
        assert all(data == message.encode() for data in got)
        assert subscriptions == [False], "subscribed once: never lost on the way"
    finally:
        subscriber.stop()
        thread.join(5)
        link.close()
