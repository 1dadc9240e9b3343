"""One client socket: websockets' sans-I/O ServerProtocol on an asyncio transport.

The websockets library parses the handshake and the client's frames and
answers pings and closes (``websockets.server.ServerProtocol``: bytes in,
events and bytes out). This class feeds it the socket's bytes and hands the
gateway each complete text message. It has no task of its own: an idle
socket costs a protocol object, this object and its transport (measured in
docs/gateway.md, "Figures"). Keepalive pings and the auth deadline are
driven by the gateway's timers.

Outgoing event frames do not go through the protocol object: the gateway
builds each frame once and queues the same bytes on every recipient's
connection (:meth:`Connection.write`), then writes each connection's queue
in one call when the loop iteration ends (``Gateway.flush``). Server frames
are never masked, so the bytes are valid for every socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway.protocol import CloseCode, text_frame

if TYPE_CHECKING:
    from gateway.server import Gateway
    from gateway.session import Session

OPEN = State.OPEN
PING_FRAME = b"\x89\x00"  # an unmasked ping with no payload: the client answers with a pong

# The library logs every open and close at INFO; one line per socket is too
# much for a gateway with thousands, so its logger only speaks of problems.
protocol_logger = logging.getLogger("whatschat.gateway.websocket")
protocol_logger.setLevel(logging.WARNING)


class Connection(asyncio.Protocol):
    """One socket from TCP accept to close, and (once authenticated) its session."""

    __slots__ = (
        "claims_expire",
        "close_timer",
        "deadline",
        "expiry_timer",
        "fragments",
        "frames_in_window",
        "frames_window",
        "gateway",
        "last_seen",
        "live",
        "pending",
        "pending_frames",
        "pending_full",
        "protocol",
        "session",
        "transport",
        "worker",
    )

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway  # settings, stats, and where messages go
        self.protocol = ServerProtocol(
            max_size=gateway.settings.gateway_max_frame_bytes, logger=protocol_logger
        )  # the library's sans-I/O WebSocket state machine
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.last_seen = 0.0  # loop time of the last bytes received (keepalive)
        self.deadline: asyncio.TimerHandle | None = None  # no hello by then: close
        self.close_timer: asyncio.TimerHandle | None = None  # closing handshake deadline
        self.fragments: bytearray | None = None  # a fragmented text message being assembled
        self.frames_window = 0.0  # loop time the current one-second frame budget began
        self.frames_in_window = 0  # client messages received in that second
        self.session: Session | None = None  # set once authenticated
        self.claims_expire = 0  # the token's expiry (Unix seconds)
        self.expiry_timer: asyncio.TimerHandle | None = None  # closes with 4003
        self.live = False  # the first sync finished; later syncs run in `worker`
        self.pending: set[int] | None = None  # conversations to re-sync
        self.pending_full = False  # a full re-sync (after a Pub/Sub break) is due
        self.worker: asyncio.Task[None] | None = None  # runs pending syncs one at a time
        self.pending_frames: list[bytes] | None = None  # frames queued until the flush

    # --- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        gateway = self.gateway
        self.last_seen = gateway.loop.time()
        self.deadline = gateway.loop.call_later(
            gateway.settings.gateway_auth_timeout_seconds, self._auth_timeout
        )
        gateway.connections.add(self)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        self.last_seen = self.gateway.loop.time()
        protocol.receive_data(data)
        for event in protocol.events_received():
            if type(event) is Frame:
                self._frame(event)
            elif isinstance(event, Request):
                protocol.send_response(self.gateway.handshake(self, event))
        self._send_protocol_data()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.deadline, self.close_timer, self.expiry_timer):
            if timer is not None:
                timer.cancel()
        self.gateway.connections.discard(self)
        if self.session is not None:
            self.gateway.disconnected(self)

    # --- frames in ------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self.fragments = bytearray(frame.data)
                return
            self._message(bytes(frame.data), opcode is Opcode.TEXT)
        elif opcode is Opcode.CONT and self.fragments is not None:
            self.fragments += frame.data
            if len(self.fragments) > self.gateway.settings.gateway_max_frame_bytes:
                self.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            elif frame.fin:
                data, self.fragments = bytes(self.fragments), None
                self._message(data, True)
        # Pings are answered and closes handled by the protocol object.

    def _message(self, data: bytes, text: bool) -> None:
        message: str | bytes = data
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                message = b""  # reported as a binary frame: not valid text
        try:
            self.gateway.received(self, message)
        except Exception:  # a bug must cost one frame, never the gateway
            self.gateway.logger.exception("failed to handle a client frame")

    # --- bytes out ------------------------------------------------------------

    def _send_protocol_data(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            else:
                transport.close()  # the closing handshake is over
        if self.protocol.close_expected() and self.close_timer is None:
            self.close_timer = self.gateway.loop.call_later(self.gateway.close_timeout, self.abort)

    def write(self, frame: bytes) -> None:
        """Queue one frame; the gateway writes the queue when the iteration ends."""
        pending = self.pending_frames
        if pending is None:
            self.pending_frames = [frame]
            self.gateway.mark_dirty(self)
        else:
            pending.append(frame)

    def send(self, payload: bytes) -> None:
        """Queue a control frame (its JSON payload)."""
        self.write(text_frame(payload))

    @property
    def is_open(self) -> bool:
        return self.protocol.state is OPEN

    def ping(self) -> None:
        if self.transport is not None and self.protocol.state is OPEN:
            self.transport.write(PING_FRAME)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; nothing more is written."""
        if self.session is not None:
            self.session.closed = True
        if self.protocol.state is OPEN:
            try:
                self.protocol.send_close(code, reason)
            except InvalidState:
                return
            self._send_protocol_data()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _auth_timeout(self) -> None:
        self.deadline = None
        if self.session is None:
            self.gateway.stats.auth_failures += 1
            if self.protocol.state is OPEN:
                self.close(CloseCode.AUTH_TIMEOUT, "no hello in time")
            else:
                self.abort()  # not even the handshake in time

    def __repr__(self) -> str:
        user: Any = self.session.user_id if self.session else None
        return f"<Connection user={user} state={self.protocol.state.name}>"
