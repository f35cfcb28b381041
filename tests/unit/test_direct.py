"""Direct writes: frames as RFC 6455 has a server send them, and a write the kernel takes only part of."""

import socket

import pytest

from numcast_worker import direct


class Browser:
    """What `direct.write` reads and sets on a browser: its WebSocket's socket, and its pending bytes."""

    def __init__(self, sock):
        self.pending = b""
        self.ws = self
        self.socket = self
        self.fd = sock


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (1, b"\x81\x01"),  # FIN + text, unmasked, 7-bit length
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),  # 16-bit length
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),  # 64-bit length
    ],
)
def test_a_frame_is_a_final_unmasked_text_frame_whose_length_counts_utf8_bytes(length, header):
    text = "é" * (length // 2) + "x" * (length % 2)  # two bytes each in UTF-8
    assert direct.frame(text) == header + text.encode()


def test_what_the_kernel_does_not_take_waits_and_goes_first_in_order():
    server, client = socket.socketpair()
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    browser = Browser(server)
    sent = [direct.frame(f"42[{n}]" + "x" * 1000) for n in range(200)]
    for data in sent[:100]:
        direct.write(browser, data)
    assert browser.pending, "the kernel took only part: the rest waits"
    assert len(browser.pending) < sum(map(len, sent[:100])), "and only the rest"
    received = bytearray()
    client.settimeout(5)
    for data in sent[100:]:
        while browser.pending:  # the reader reads again: the fan-out's next rounds flush what waits first
            received += client.recv(65536)
            direct.write(browser, b"")
        direct.write(browser, data)
    while browser.pending:
        received += client.recv(65536)
        direct.write(browser, b"")
    server.close()
    while chunk := client.recv(65536):
        received += chunk
    assert bytes(received) == b"".join(sent)
