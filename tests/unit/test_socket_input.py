"""The Engine.IO and Socket.IO checks of numcast.socket_input, message by message: what passes, and what is refused."""

import pytest

from numcast.socket_input import _Packets

# What browsers and python-socketio clients send: all of it passes.
VALID = [
    ["40"],  # join the namespace
    ['40{"token":"x"}'],  # ... with an auth payload
    ["3", "3"],  # pongs
    ["2probe", "5"],  # the upgrade's probe and upgrade
    ['42["hello",{"a":1}]', '421["ask",1]', '431[{"ok":true}]'],  # events, one with an ack id, an ack
    ['451-["upload",{"_placeholder":true,"num":0}]', b"\x00\x01", "3"],  # a binary event, its attachment
    ['462-[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]', b"a", b"b"],  # a binary ack, two
    ["41", "1"],  # leave the namespace, close
]


@pytest.mark.parametrize("messages", VALID, ids=[" ".join(map(repr, m))[:40] for m in VALID])
def test_what_clients_send_passes(messages):
    packets = _Packets()
    assert [packets.problem(message) for message in messages] == [None] * len(messages)


# (messages, the (layer, reason) of the last one; those before it pass)
REFUSED = [
    ([""], ("engineio", "packet_type")),
    (["0"], ("engineio", "packet_type")),  # only the server opens
    (["9"], ("engineio", "packet_type")),
    (["b!!!"], ("engineio", "packet_type")),  # base64 is long-polling's; over a WebSocket binary is binary
    (['42["x",{bad'], ("socketio", "not_decodable")),
    (["42" + "[" * 100_000], ("socketio", "not_decodable")),
    (["44"], ("socketio", "packet_type")),  # CONNECT_ERROR: the server's to send
    (["47"], ("socketio", "packet_type")),
    (["42[7]"], ("socketio", "event_name")),
    (['42{"a":1}'], ("socketio", "event_name")),
    (['45["x"]'], ("socketio", "attachments")),  # binary, but no count
    (['452-["x",{"_placeholder":true,"num":0}]'], ("socketio", "attachments")),
    (['451-["x",{"_placeholder":true,"num":1}]'], ("socketio", "attachments")),
    (['451-["x",{"_placeholder":true,"num":0}]', '42["y"]'], ("socketio", "attachments")),
    ([b"\x00"], ("socketio", "attachments")),
    (['451-["x",{"_placeholder":true,"num":0}]', b"a", b"b"], ("socketio", "attachments")),
]


@pytest.mark.parametrize(("messages", "refusal"), REFUSED, ids=[repr(m[-1])[:40] for m, _ in REFUSED])
def test_a_broken_packet_is_refused_with_its_layer_and_reason(messages, refusal):
    packets = _Packets()
    assert [packets.problem(message) for message in messages[:-1]] == [None] * (len(messages) - 1)
    assert packets.problem(messages[-1])[:2] == refusal
