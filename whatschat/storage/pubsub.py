"""The gateway's Redis Pub/Sub connection: a small RESP reader on an asyncio protocol.

The gateway's hot path is "read a published event, hand it to the router".
redis-py's asyncio PubSub wakes a coroutine and builds a dict per message;
this reader parses the RESP2 replies straight out of the socket buffer in
``data_received`` and calls ``on_message(channel, payload)`` synchronously,
with both as ``bytes`` (no decoding: the router keys channels by bytes).
Subscription confirmations and PING replies are reported too, so the caller
knows when a SUBSCRIBE is in force. Any break (EOF, error, Redis dropping a
subscriber whose output buffer passed its limit) ends in ``on_lost``. See
docs/gateway.md ("Pub/Sub").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

CRLF = b"\r\n"


class RespError(Exception):
    """Redis answered with an error, or sent bytes that are not RESP."""


def encode_command(*args: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Any, int] | None:
    """Parse one RESP2 value at ``pos``; return it and the next position, or None if
    the buffer does not hold all of it yet. Errors come back as :class:`RespError`."""
    end = buf.find(CRLF, pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 36:  # "$" bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return None
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 42:  # "*" array
        count = int(buf[pos + 1 : end])
        items: list[Any] = []
        nxt = end + 2
        for _ in range(count):
            parsed = parse_reply(buf, nxt)
            if parsed is None:
                return None
            item, nxt = parsed
            items.append(item)
        return items, nxt
    if kind == 58:  # ":" integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # "+" simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 45:  # "-" error
        return RespError(bytes(buf[pos + 1 : end]).decode("utf-8", "replace")), end + 2
    raise RespError(f"unexpected RESP type byte {kind!r}")


class PubSubConnection(asyncio.Protocol):
    """One subscriber connection. Create it with :func:`connect`.

    Callbacks run on the event loop inside ``data_received``; they must not block.
    """

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[bytes], None],
        on_lost: Callable[[BaseException | None], None],
        on_pong: Callable[[], None],
    ) -> None:
        self.on_message = on_message  # (channel, payload) for every published message
        self.on_subscribed = on_subscribed  # channel whose SUBSCRIBE is now in force
        self.on_lost = on_lost  # called once when the connection ends, for any reason
        self.on_pong = on_pong  # a PING sent with :meth:`ping` was answered
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.buffer = bytearray()  # bytes received and not yet parsed
        self.lost = False  # on_lost has been called
        self.handshake: asyncio.Future[None] | None = None  # AUTH/SELECT replies awaited
        self.handshake_replies = 0  # replies still expected before subscribing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                parsed = parse_reply(buf, pos)
                if parsed is None:
                    break
                reply, pos = parsed
                self._dispatch(reply)
        except (RespError, ValueError) as exc:
            self._fail(exc)
            return
        del buf[:pos]

    def _dispatch(self, reply: Any) -> None:
        if self.handshake_replies:
            self.handshake_replies -= 1
            if isinstance(reply, RespError):
                raise reply
            if not self.handshake_replies and self.handshake and not self.handshake.done():
                self.handshake.set_result(None)
            return
        if type(reply) is list and reply:
            kind = reply[0]
            if kind == b"message":
                self.on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                self.on_subscribed(reply[1])
            elif kind == b"pong":
                self.on_pong()
            # "unsubscribe" confirmations need no action: the router stopped
            # routing the channel when it asked to leave it.
        elif isinstance(reply, RespError):
            raise reply

    def _fail(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"Redis closed the connection: {exc}"))
        if not self.lost:
            self.lost = True
            self.on_lost(exc)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def subscribe(self, channels: Iterable[bytes]) -> None:
        """Ask for channels; each confirmation arrives through ``on_subscribed``."""
        batch = list(channels)
        # Redis takes any number of channels per command; batches keep one
        # command's size bounded.
        for start in range(0, len(batch), 500):
            self._write(encode_command(b"SUBSCRIBE", *batch[start : start + 500]))

    def unsubscribe(self, channels: Iterable[bytes]) -> None:
        batch = list(channels)
        for start in range(0, len(batch), 500):
            self._write(encode_command(b"UNSUBSCRIBE", *batch[start : start + 500]))

    def ping(self) -> None:
        """Send PING; the answer arrives through ``on_pong`` while the link is alive."""
        self._write(encode_command(b"PING"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(
    url: str,
    timeout: float,
    on_message: Callable[[bytes, bytes], None],
    on_subscribed: Callable[[bytes], None],
    on_lost: Callable[[BaseException | None], None],
    on_pong: Callable[[], None],
) -> PubSubConnection:
    """Open a subscriber connection to ``redis://[user:password@]host:port``.

    Raises OSError/TimeoutError/ConnectionError when Redis cannot be reached.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"the gateway needs a redis:// URL, not {parts.scheme!r}")
    loop = asyncio.get_running_loop()
    proto = PubSubConnection(on_message, on_subscribed, on_lost, on_pong)
    await asyncio.wait_for(
        loop.create_connection(lambda: proto, parts.hostname or "127.0.0.1", parts.port or 6379),
        timeout,
    )
    if parts.password is not None:
        auth = [unquote(parts.password).encode()]
        if parts.username:
            auth.insert(0, unquote(parts.username).encode())
        proto.handshake = loop.create_future()
        proto.handshake_replies = 1
        proto._write(encode_command(b"AUTH", *auth))
        try:
            await asyncio.wait_for(proto.handshake, timeout)
        except BaseException:
            proto.close()
            raise
    return proto
