"""The TCP mirror's shared secret: a challenge on connect and an HMAC per line, so only the key's holders count.

On each new connection the worker sends one line, `numcast-mirror/1 <nonce>` (16 random bytes in hex). Every
line the client sends after it is `<mac> <payload>`: the payload is an envelope, or nothing for a heartbeat,
and the MAC is the first 16 bytes, in hex, of HMAC-SHA256(key, nonce + counter + payload), where the counter
(8 bytes, big-endian) is 0 for the first line of the connection and grows by one per line. A line replayed on
another connection (another nonce), or moved within one (another counter), does not verify.

The key file (MIRROR_KEY_FILE, a mounted Secret) holds one key per line: the first signs, any of them verifies,
so a key is rotated without losing a value (docs/security.md, "Rotate the mirror key"). The file is read again
when it changes; a changed file that holds no usable key leaves the previous keys in force, logged.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import socket
import time

from numcast.auth import file_stamp
from numcast.logs import Throttled
from numcast.settings import SettingsError

log = logging.getLogger(__name__)

FILE_VAR = "MIRROR_KEY_FILE"
GREETING = b"numcast-mirror/1"
NONCE_BYTES = 16
MAC_BYTES = 16  # HMAC-SHA256 cut to 128 bits: a forgery needs 2^128 tries, each costing a new connection
MAC_HEX = 2 * MAC_BYTES
MIN_KEY, MAX_KEY = 32, 256  # characters; `openssl rand -hex 32` makes 64
MAX_KEYS = 8
RECHECK_SECONDS = 1.0  # the file is stat()ed at most this often
GREETING_MAX = 128  # bytes a client reads for the greeting line before giving up
_KEY_RE = re.compile(rb"[\x21-\x7e]+")  # printable ASCII, no spaces


def parse(data: bytes, where: str) -> tuple[bytes, ...]:
    """The keys in a key file's bytes: one per line, `#` comments and blank lines skipped; SettingsError if none."""
    keys = []
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if not MIN_KEY <= len(line) <= MAX_KEY or not _KEY_RE.fullmatch(line):
            raise SettingsError(
                f"{FILE_VAR}={where!r}: line {number} must be one key of {MIN_KEY}-{MAX_KEY} printable characters "
                "without spaces (`openssl rand -hex 32` makes one)"
            )
        keys.append(line)
    if not keys:
        raise SettingsError(f"{FILE_VAR}={where!r}: holds no key (`openssl rand -hex 32` makes one)")
    if len(keys) > MAX_KEYS:
        raise SettingsError(f"{FILE_VAR}={where!r}: holds {len(keys)} keys, at most {MAX_KEYS}")
    return tuple(keys)


def read(path: str) -> tuple[bytes, ...]:
    """The keys of the file at `path`; SettingsError naming MIRROR_KEY_FILE if it cannot be used."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_KEYS * (MAX_KEY + 2) + 4096)
    except OSError as exc:
        raise SettingsError(f"{FILE_VAR}={path!r}: cannot read it: {exc.strerror}") from None
    return parse(data, path)


def new_key() -> str:
    """A fresh random key, as `numcast up` writes one per run."""
    return secrets.token_hex(32)


def mac(key: bytes, nonce: bytes, counter: int, payload: bytes) -> bytes:
    """The MAC of line `counter` of the connection greeted with `nonce`, in hex."""
    digest = hmac.digest(key, nonce + counter.to_bytes(8, "big") + payload, "sha256")
    return digest[:MAC_BYTES].hex().encode()


class MirrorKeys:
    """The keys in force, from MIRROR_KEY_FILE, read again when the file changes (a rotated Secret)."""

    def __init__(self, path: str) -> None:
        """Read now: a missing or bad file at start-up is a SettingsError naming MIRROR_KEY_FILE."""
        self.path = path
        self._keys = read(path)
        self._seen = self._stat()
        self._checked = time.monotonic()
        self._warn = Throttled(log, interval=30.0)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The keys, the signing one first; the file is looked at again at most every RECHECK_SECONDS."""
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            seen = self._stat()
            if seen != self._seen:
                try:
                    self._keys = read(self.path)
                except SettingsError as exc:
                    self._warn.warning("file", "mirror key file changed but is not usable, the keys stay: %s", exc)
                else:
                    self._seen = seen
                    log.info("mirror key file changed, read again file=%s keys=%d", self.path, len(self._keys))
        return self._keys

    def verify(self, nonce: bytes, counter: int, payload: bytes, given: bytes, first: int = 0) -> int:
        """The index of the key that signed the line (trying `first` first), or -1 if none did."""
        keys = self.keys
        order = (first, *(n for n in range(len(keys)) if n != first)) if first < len(keys) else range(len(keys))
        for n in order:
            if hmac.compare_digest(mac(keys[n], nonce, counter, payload), given):
                return n
        return -1

    def _stat(self) -> tuple | None:
        return file_stamp(self.path)


def greeting(nonce: bytes) -> bytes:
    """The line the worker sends first on each connection."""
    return GREETING + b" " + nonce.hex().encode() + b"\n"


class MirrorConnection:
    """The client's end: connects, reads the worker's challenge, then sends signed lines."""

    def __init__(self, address: tuple[str, int], keys: MirrorKeys, timeout: float = 2.0) -> None:
        self.keys = keys
        self.sock = socket.create_connection(address, timeout=timeout)
        try:
            self.nonce = self._read_greeting()
        except BaseException:
            self.sock.close()
            raise
        self.counter = 0

    def _read_greeting(self) -> bytes:
        data = b""
        while b"\n" not in data:
            chunk = self.sock.recv(GREETING_MAX - len(data))
            if not chunk or len(data) + len(chunk) >= GREETING_MAX:
                raise ConnectionResetError("the mirror port sent no numcast-mirror/1 greeting")
            data += chunk
        line, _, rest = data.partition(b"\n")
        name, _, nonce = line.partition(b" ")
        if name != GREETING or rest or len(nonce) != 2 * NONCE_BYTES:
            raise ConnectionResetError(f"the mirror port greeted with {line[:40]!r}, not numcast-mirror/1")
        try:
            return bytes.fromhex(nonce.decode("ascii"))
        except ValueError:
            raise ConnectionResetError("the mirror port's challenge is not hex") from None

    def sign(self, payloads: list[bytes]) -> bytes:
        """The signed lines for `payloads`, in order (an empty payload is a heartbeat), ready to send."""
        key, nonce, counter = self.keys.keys[0], self.nonce, self.counter
        out = []
        for payload in payloads:
            out.append(mac(key, nonce, counter, payload) + b" " + payload + b"\n")
            counter += 1
        self.counter = counter
        return b"".join(out)

    def send(self, payloads: list[bytes]) -> None:
        """Sign and send `payloads`; raises OSError when the connection fails."""
        self.sock.sendall(self.sign(payloads))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
